import { type Codec, type DeadLetter, describeError, type Envelope, jsonCodec, msgpackCodec } from '@agentbus/core';
import { renderTable, type Style, truncate } from '../output.js';

/** A dead-letter record as the CLI shows it: plain JSON, with the envelope decoded when possible. */
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

/** The CLI's JSON view of a record (bytes become a decoded envelope or base64). */
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

/** The `dlq list` table. */
export function deadLetterTable(views: readonly DeadLetterView[], style: Style): string[] {
  return renderTable(
    ['ID', 'DEAD-LETTERED', 'GROUP', 'TOPIC', 'REASON', 'ATTEMPTS', 'ERROR'],
    views.map((v) => [
      v.id,
      style.dim(v.deadLetteredAt),
      v.group,
      style.cyan(v.topic),
      style.yellow(v.reason),
      String(v.attempts),
      truncate(v.error ?? '', 60),
    ]),
    ['left', 'left', 'left', 'left', 'left', 'right', 'left'],
  );
}

/** The `dlq show` text: one field per line, then the envelope (or the raw body) as JSON. */
export function deadLetterDetails(v: DeadLetterView, style: Style): string[] {
  const field = (name: string, value: string | number | undefined) =>
    value === undefined ? [] : [`${style.bold(name.padEnd(15))}${value}`];
  const lines = [
    ...field('id', v.id),
    ...field('reason', style.yellow(v.reason)),
    ...field('error', v.error),
    ...field('attempts', v.attempts),
    ...field('group', v.group),
    ...field('topic', style.cyan(v.topic)),
    ...field('message id', v.messageId),
    ...field('published', v.publishedAt),
    ...field('dead-lettered', v.deadLetteredAt),
    ...field('priority', v.priority),
    ...field('expires', v.expiresAt),
    ...field('bytes', v.bytes),
    ...field('headers', JSON.stringify(v.headers)),
  ];
  if (v.envelope) lines.push(style.bold('envelope'), ...JSON.stringify(v.envelope, null, 2).split('\n'));
  else lines.push(...field('undecodable', v.decodeError), ...field('body (base64)', v.bodyBase64));
  return lines;
}
