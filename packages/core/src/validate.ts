import { assertPattern, assertPriority, assertTopic, topicMatches } from './envelope.js';
import { ConfigError } from './errors.js';
import type { DeadLetter, DeadLetterFilter, TransportMessage, TransportSubscribeOptions } from './transport.js';

/** A finite number > 0, or a ConfigError naming `path`. */
export function positiveNumber(value: unknown, path: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    throw new ConfigError(`must be a positive number, got ${String(value)}`, { path });
  }
  return value;
}

/** A finite number >= 0, or a ConfigError naming `path`. */
export function nonNegativeNumber(value: unknown, path: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
    throw new ConfigError(`must be a number >= 0, got ${String(value)}`, { path });
  }
  return value;
}

/** An integer >= 1, or a ConfigError naming `path`. */
export function positiveInteger(value: unknown, path: string): number {
  if (!Number.isSafeInteger(value) || (value as number) < 1) {
    throw new ConfigError(`must be a positive integer, got ${String(value)}`, { path });
  }
  return value as number;
}

/** Throws ValidationError for a message a transport must not store (bad topic or priority). */
export function assertTransportBatch(batch: readonly TransportMessage[]): void {
  for (const m of batch) {
    assertTopic(m.topic);
    assertPriority(m.priority);
  }
}

/** Whether a dead letter matches a filter (every field given must match). */
export function matchesDeadLetterFilter(rec: DeadLetter, f: DeadLetterFilter): boolean {
  if (f.group !== undefined && rec.group !== f.group) return false;
  if (f.reason !== undefined && rec.reason !== f.reason) return false;
  if (f.topic !== undefined && !topicMatches(f.topic, rec.message.topic)) return false;
  if (f.sinceMs !== undefined && rec.deadLetteredAtMs < f.sinceMs) return false;
  if (f.untilMs !== undefined && rec.deadLetteredAtMs >= f.untilMs) return false;
  return true;
}

/**
 * Throws for a subscribe call a transport must refuse: a bad pattern (ValidationError) or a
 * missing group, prefetch below 1 (or above `maxPrefetch`), an ack timeout not above 0 (ConfigError).
 */
export function assertSubscribeOptions(
  pattern: string,
  options: TransportSubscribeOptions,
  maxPrefetch = Number.MAX_SAFE_INTEGER,
): void {
  assertPattern(pattern);
  if (typeof options?.group !== 'string' || options.group === '') {
    throw new ConfigError('must be a non-empty string', { path: 'subscribe.group' });
  }
  if (!Number.isInteger(options.prefetch) || options.prefetch < 1 || options.prefetch > maxPrefetch) {
    throw new ConfigError(
      `must be an integer 1–${maxPrefetch === Number.MAX_SAFE_INTEGER ? '…' : maxPrefetch}, got ${options.prefetch}`,
      { path: 'subscribe.prefetch' },
    );
  }
  if (!(options.ackTimeoutMs > 0)) {
    throw new ConfigError(`must be > 0, got ${options.ackTimeoutMs}`, { path: 'subscribe.ackTimeoutMs' });
  }
}
