import { createHash } from 'node:crypto';

/** A group as one subject token / consumer name: itself when it is one already, else a digest. */
export function groupToken(group: string): string {
  return /^[A-Za-z0-9_-]{1,64}$/.test(group)
    ? group
    : `g${createHash('sha256').update(group).digest('hex').slice(0, 32)}`;
}

/**
 * Names under one namespace `<ns>`: the stream `AB_<ns>` holds subjects `<ns>.t.<topic>`; the
 * dead-letter stream `AB_<ns>_DLQ` holds `<ns>.dlq.<group token>.<topic>`; a group is the durable
 * pull consumer named by its token on the first stream. The stream `AB_<ns>_ERR` (created by the
 * first nack with an error) holds the last error of a message for a group, one subject
 * `<ns>.err.<group token>.<stream sequence>` each.
 */
export class NatsNames {
  constructor(readonly namespace: string) {}

  get stream(): string {
    return `AB_${this.namespace}`;
  }

  get deadLetterStream(): string {
    return `AB_${this.namespace}_DLQ`;
  }

  get lastErrorStream(): string {
    return `AB_${this.namespace}_ERR`;
  }

  /** Where the last error of the message at `streamSeq` for a group's consumer is kept. */
  lastErrorSubject(consumer: string, streamSeq: number): string {
    return `${this.namespace}.err.${consumer}.${streamSeq}`;
  }

  /** All last-error records, or those of one group's consumer. */
  lastErrorFilter(consumer?: string): string {
    return consumer === undefined ? `${this.namespace}.err.>` : `${this.namespace}.err.${consumer}.>`;
  }

  /** The subject of a topic (or pattern: `*` and `>` are NATS wildcards too). */
  subject(topicOrPattern: string): string {
    return `${this.namespace}.t.${topicOrPattern}`;
  }

  /** The topic of a stored subject. */
  topicOf(subject: string): string {
    return subject.slice(this.namespace.length + 3);
  }

  deadLetterSubject(group: string, topic: string): string {
    return `${this.namespace}.dlq.${groupToken(group)}.${topic}`;
  }

  /** All dead letters, or one group's. */
  deadLetterFilter(group?: string): string {
    return group === undefined ? `${this.namespace}.dlq.>` : `${this.namespace}.dlq.${groupToken(group)}.>`;
  }

  consumer(group: string): string {
    return groupToken(group);
  }
}

/** Headers the transport keeps (prefix `x-ab-`, reserved). User headers travel as one JSON header. */
export const H = Object.freeze({
  id: 'x-ab-id',
  headers: 'x-ab-h',
  priority: 'x-ab-priority',
  expiresAt: 'x-ab-expires-at',
  attempts: 'x-ab-attempts',
  /** Set on a replay: only that group takes it; the others ack it unseen. */
  onlyGroup: 'x-ab-only-group',
  topic: 'x-ab-topic',
  publishedAt: 'x-ab-published-at',
  /** On a last-error record: the delivery count of the delivery that was nacked with it. */
  delivered: 'x-ab-delivered',
  dlReason: 'x-ab-dl-reason',
  dlError: 'x-ab-dl-error',
  dlAttempts: 'x-ab-dl-attempts',
  dlAt: 'x-ab-dl-at',
  dlGroup: 'x-ab-dl-group',
  /** On a dead letter of an ephemeral group: purged once that group's consumer is gone. */
  dlEphemeral: 'x-ab-dl-ephemeral',
});
