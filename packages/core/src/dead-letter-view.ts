import { type Codec, jsonCodec, msgpackCodec } from './codec.js';
import type { Envelope } from './envelope.js';
import { describeError } from './errors.js';
import type { DeadLetter } from './transport.js';

/** A dead-letter record as operators see it (CLI, gateway): plain JSON, with the envelope decoded when possible. */
export interface DeadLetterView {
  readonly id: string;
  readonly group: string;
  readonly reason: string;
  readonly error?: string | undefined;
  readonly attempts: number;
  readonly deadLetteredAt: string;
  readonly topic: string;
  readonly messageId: string;
  readonly publishedAt: string;
  readonly priority: number;
  readonly expiresAt?: string | undefined;
  readonly headers: Readonly<Record<string, string>>;
  readonly bytes: number;
  /** The decoded envelope, when the body decodes with the codec its content-type names. */
  readonly envelope?: Envelope | undefined;
  /** Why the body could not be decoded; then `bodyBase64` carries it raw. */
  readonly decodeError?: string | undefined;
  readonly bodyBase64?: string | undefined;
}

const codecs: readonly Codec[] = [jsonCodec(), msgpackCodec()];

/** Decodes with the codec the content-type header names, falling back to JSON. */
function decode(record: DeadLetter): { envelope?: Envelope; decodeError?: string } {
  const type = record.message.headers['content-type'];
  const codec = codecs.find((c) => c.contentType === type) ?? (codecs[0] as Codec);
  try {
    return { envelope: codec.decode(record.message.body) };
  } catch (err) {
    return { decodeError: describeError(err) };
  }
}

/** The JSON view of a record (bytes become a decoded envelope or base64). */
export function viewDeadLetter(record: DeadLetter): DeadLetterView {
  const m = record.message;
  const { envelope, decodeError } = decode(record);
  return {
    id: record.id,
    group: record.group,
    reason: record.reason,
    error: record.error,
    attempts: record.attempts,
    deadLetteredAt: new Date(record.deadLetteredAtMs).toISOString(),
    topic: m.topic,
    messageId: m.id,
    publishedAt: new Date(m.publishedAtMs).toISOString(),
    priority: m.priority,
    expiresAt: m.expiresAtMs === undefined ? undefined : new Date(m.expiresAtMs).toISOString(),
    headers: m.headers,
    bytes: m.body.byteLength,
    envelope,
    decodeError,
    bodyBase64: envelope ? undefined : Buffer.from(m.body).toString('base64'),
  };
}
