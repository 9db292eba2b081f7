import { MAX_PRIORITY, type TransportMessage } from '@agentbus/core';
import type { MessageProperties, Options } from 'amqplib';

/**
 * Headers the transport keeps beside the user's (prefix `x-ab-`, reserved): the topic (a retry
 * or replay is routed by queue name, not by topic), publish and expiry times in ms, attempts
 * already made before this copy, the error of the nack that made this copy (the next delivery's
 * `lastError`), and the dead-letter record's fields.
 */
export const H = Object.freeze({
  topic: 'x-ab-topic',
  publishedAt: 'x-ab-published-at',
  expiresAt: 'x-ab-expires-at',
  attempts: 'x-ab-attempts',
  lastError: 'x-ab-last-error',
  dlId: 'x-ab-dl-id',
  dlReason: 'x-ab-dl-reason',
  dlError: 'x-ab-dl-error',
  dlAttempts: 'x-ab-dl-attempts',
  dlAt: 'x-ab-dl-at',
  dlGroup: 'x-ab-dl-group',
});

/** Headers the broker adds (dead-lettering, quorum delivery count): never the user's. */
function isBrokerHeader(name: string): boolean {
  return (
    name === 'x-death' ||
    name === 'x-delivery-count' ||
    name.startsWith('x-first-death-') ||
    name.startsWith('x-last-death-')
  );
}

/** The publish properties of a first publish. */
export function publishOptions(m: TransportMessage, nowMs: number): Options.Publish {
  // The topic is the routing key; copies that go straight to a queue carry it as H.topic.
  const headers: Record<string, string> = { ...m.headers, [H.publishedAt]: String(nowMs) };
  if (m.expiresAtMs !== undefined) headers[H.expiresAt] = String(m.expiresAtMs);
  return { persistent: true, messageId: m.id, priority: m.priority, headers };
}

/** The user's headers of a delivered message (transport and broker headers removed). */
export function userHeaders(raw: Record<string, unknown> | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (!raw) return out;
  for (const [k, v] of Object.entries(raw)) {
    if (k.startsWith('x-ab-') || isBrokerHeader(k) || v === undefined || v === null) continue;
    out[k] = Buffer.isBuffer(v) ? v.toString('utf8') : String(v);
  }
  return out;
}

/** A number header (stored as a string), or undefined. */
export function numberHeader(raw: Record<string, unknown> | undefined, name: string): number | undefined {
  const v = raw?.[name];
  if (v === undefined || v === null) return undefined;
  const n = Number(Buffer.isBuffer(v) ? v.toString('latin1') : v);
  return Number.isFinite(n) ? n : undefined;
}

/** A string header, or undefined. */
export function stringHeader(raw: Record<string, unknown> | undefined, name: string): string | undefined {
  const v = raw?.[name];
  if (v === undefined || v === null) return undefined;
  return Buffer.isBuffer(v) ? v.toString('utf8') : String(v);
}

/**
 * The properties for a copy of a delivered message (retry, release, dead letter, replay): the
 * original's, without the broker's dead-lettering headers, with `extra` headers set or (when
 * undefined) removed.
 */
export function copyOptions(
  props: MessageProperties,
  extra: Readonly<Record<string, string | undefined>>,
): Options.Publish {
  const headers: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(props.headers ?? {})) if (!isBrokerHeader(k)) headers[k] = v;
  for (const [k, v] of Object.entries(extra)) {
    if (v === undefined) delete headers[k];
    else headers[k] = v;
  }
  const priority = typeof props.priority === 'number' ? Math.min(MAX_PRIORITY, props.priority) : undefined;
  return {
    persistent: true,
    messageId: props.messageId,
    ...(priority === undefined ? {} : { priority }),
    ...(props.contentType ? { contentType: props.contentType } : {}),
    headers,
  };
}
