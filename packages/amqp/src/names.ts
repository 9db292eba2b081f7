/**
 * Names of what the transport declares on the broker, all under one namespace:
 * - `<ns>`: the durable topic exchange every publish goes to (routing key = topic);
 * - `<ns>.q.<group>`: a group's durable queue, bound to the exchange with its patterns;
 * - `<ns>.q.<group>.retry.<ms>`: the group's TTL queues of the retry ladder, dead-lettering
 *   back into the group queue;
 * - `<ns>.q.<group>.dlx` / `.dlq`: the group's dead-letter exchange (fanout) and queue;
 * - `<ns>.groups`: the registry of groups (one message per group queue created), which the
 *   dead-letter store reads to find every group's dead letters.
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
