import { type Clock, ConfigError, nonNegativeNumber, positiveNumber, systemClock } from '@agentbus/core';

export interface NatsTransportOptions {
  /** `nats://host:port`, or several separated by commas (a cluster). Default `nats://127.0.0.1:4222`. */
  readonly url?: string;
  /**
   * One subject token ([A-Za-z0-9_-], default `agentbus`): topics are stored as
   * `<namespace>.t.<topic>` in the stream `AB_<namespace>`, dead letters in `AB_<namespace>_DLQ`.
   */
  readonly namespace?: string;
  /** JetStream storage of both streams (default `file`). */
  readonly storage?: 'file' | 'memory';
  /** Stream replicas (default 1; 3 on a cluster for fault tolerance). */
  readonly replicas?: number;
  /** Publisher dedup window (`Nats-Msg-Id` = envelope id), default 2 minutes. */
  readonly duplicateWindowMs?: number;
  /** How long a publish waits for JetStream's acknowledgement (default 5 s). */
  readonly publishTimeoutMs?: number;
  /**
   * How long the error of a nack is kept for the redelivery to show as `lastError` (default 1 day;
   * the `max_age` of the stream `AB_<namespace>_ERR`, set when that stream is created). A nack
   * delay longer than this leaves the redelivery without it.
   */
  readonly lastErrorTtlMs?: number;
  /**
   * The `inactive_threshold` of an ephemeral group's consumer (30 s by default): the server
   * deletes it once its subscription has sent no pull request for this long (its process died).
   */
  readonly ephemeralInactiveMs?: number;
  /**
   * How often this transport purges the dead letters of ephemeral groups whose consumer is gone
   * (30 s by default; `0`: never, call `sweep()`). A crashed process's ephemeral group is gone
   * after `ephemeralInactiveMs`, its dead letters after at most this much more.
   */
  readonly ephemeralSweepIntervalMs?: number;
  /** Reconnect: wait between attempts (ms) and random jitter added to it. */
  readonly reconnect?: { readonly waitMs?: number; readonly jitterMs?: number };
  readonly clock?: Clock;
}

export const NATS_TRANSPORT_DEFAULTS = Object.freeze({
  url: 'nats://127.0.0.1:4222',
  namespace: 'agentbus',
  storage: 'file' as 'file' | 'memory',
  replicas: 1,
  duplicateWindowMs: 120_000,
  publishTimeoutMs: 5_000,
  lastErrorTtlMs: 86_400_000,
  ephemeralInactiveMs: 30_000,
  ephemeralSweepIntervalMs: 30_000,
  reconnect: Object.freeze({ waitMs: 250, jitterMs: 250 }),
});

export interface ResolvedNatsOptions {
  readonly servers: string[];
  readonly namespace: string;
  readonly storage: 'file' | 'memory';
  readonly replicas: number;
  readonly duplicateWindowMs: number;
  readonly publishTimeoutMs: number;
  readonly lastErrorTtlMs: number;
  readonly ephemeralInactiveMs: number;
  readonly ephemeralSweepIntervalMs: number;
  readonly reconnect: { readonly waitMs: number; readonly jitterMs: number };
  readonly clock: Clock;
}

const KNOWN = new Set([
  'url',
  'namespace',
  'storage',
  'replicas',
  'duplicateWindowMs',
  'publishTimeoutMs',
  'lastErrorTtlMs',
  'ephemeralInactiveMs',
  'ephemeralSweepIntervalMs',
  'reconnect',
  'clock',
]);

/** Validates once and fills in defaults; throws ConfigError naming the field. */
export function resolveNatsOptions(options: NatsTransportOptions = {}): ResolvedNatsOptions {
  if (options === null || typeof options !== 'object') throw new ConfigError('an options object is required');
  for (const key of Object.keys(options)) {
    if (!KNOWN.has(key)) throw new ConfigError('unknown option', { path: key });
  }
  const d = NATS_TRANSPORT_DEFAULTS;
  const url = options.url ?? d.url;
  const servers = typeof url === 'string' ? url.split(',').map((s) => s.trim()) : [];
  if (servers.length === 0 || servers.some((s) => !/^(nats|tls):\/\/[^/\s]+\/?$/.test(s))) {
    throw new ConfigError(`must be nats://host:port (comma-separated for several), got ${JSON.stringify(url)}`, {
      path: 'url',
    });
  }
  const namespace = options.namespace ?? d.namespace;
  if (typeof namespace !== 'string' || !/^[A-Za-z0-9_-]{1,64}$/.test(namespace)) {
    throw new ConfigError(`must be one subject token of [A-Za-z0-9_-], got ${JSON.stringify(namespace)}`, {
      path: 'namespace',
    });
  }
  const storage = options.storage ?? d.storage;
  if (storage !== 'file' && storage !== 'memory') {
    throw new ConfigError(`must be file or memory, got ${JSON.stringify(storage)}`, { path: 'storage' });
  }
  const replicas = options.replicas ?? d.replicas;
  if (!Number.isInteger(replicas) || replicas < 1 || replicas > 5) {
    throw new ConfigError(`must be an integer 1–5, got ${String(replicas)}`, { path: 'replicas' });
  }
  const clock = options.clock ?? systemClock;
  if (typeof clock?.now !== 'function') throw new ConfigError('must have a now() method', { path: 'clock' });
  return {
    servers,
    namespace,
    storage,
    replicas,
    duplicateWindowMs: positiveNumber(options.duplicateWindowMs ?? d.duplicateWindowMs, 'duplicateWindowMs'),
    publishTimeoutMs: positiveNumber(options.publishTimeoutMs ?? d.publishTimeoutMs, 'publishTimeoutMs'),
    lastErrorTtlMs: positiveNumber(options.lastErrorTtlMs ?? d.lastErrorTtlMs, 'lastErrorTtlMs'),
    ephemeralInactiveMs: positiveNumber(options.ephemeralInactiveMs ?? d.ephemeralInactiveMs, 'ephemeralInactiveMs'),
    ephemeralSweepIntervalMs: nonNegativeNumber(
      options.ephemeralSweepIntervalMs ?? d.ephemeralSweepIntervalMs,
      'ephemeralSweepIntervalMs',
    ),
    reconnect: {
      waitMs: positiveNumber(options.reconnect?.waitMs ?? d.reconnect.waitMs, 'reconnect.waitMs'),
      jitterMs: nonNegativeNumber(options.reconnect?.jitterMs ?? d.reconnect.jitterMs, 'reconnect.jitterMs'),
    },
    clock,
  };
}
