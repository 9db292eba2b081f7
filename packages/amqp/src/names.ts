/**
 * Names of what the transport declares on the broker, all under one namespace:
 * - `<ns>`: the durable topic exchange every publish goes to (routing key = topic);
 * - `<ns>.q.<group>`: a group's durable queue, bound to the exchange with its patterns;
 * - `<ns>.q.<group>.retry.<ms>`: the group's TTL queues of the retry ladder, dead-lettering
 *   back into the group queue;
 * - `<ns>.q.<group>.dlx` / `.dlq`: the group's dead-letter exchange (fanout) and queue;
 * - `<ns>.groups`: the registry of groups (one message per group queue created), which the
 *   dead-letter store reads to find every group's dead letters;
 * - `<ns>.lock.<what>`: exclusive queues that lock the browse of a dead-letter queue or of the
 *   registry, so that two browses never see each other's messages as taken.
 */
export class AmqpNames {
  constructor(readonly namespace: string) {}

  get exchange(): string {
    return this.namespace;
  }

  get registry(): string {
    return `${this.namespace}.groups`;
  }

  queue(group: string): string {
    return `${this.namespace}.q.${group}`;
  }

  retry(group: string, ms: number): string {
    return `${this.queue(group)}.retry.${ms}`;
  }

  deadLetterExchange(group: string): string {
    return `${this.queue(group)}.dlx`;
  }

  deadLetterQueue(group: string): string {
    return `${this.queue(group)}.dlq`;
  }

  /** The exclusive queue whose owner alone browses `queue` (a group's dead letters or the registry). */
  browseLock(queue: string): string {
    const prefix = `${this.namespace}.`;
    return `${this.namespace}.lock.${queue.startsWith(prefix) ? queue.slice(prefix.length) : queue}`;
  }
}

/**
 * An agentbus pattern as an AMQP topic binding key: `*` is one segment in both; `>` (one or more
 * trailing segments) becomes `*.#`, since AMQP's `#` alone also matches zero segments.
 */
export function bindingKey(pattern: string): string {
  return pattern
    .split('.')
    .map((s) => (s === '>' ? '*.#' : s))
    .join('.');
}
