import { BusError, ConfigError } from '@agentbus/core';
import type { Channel } from 'amqplib';
import { toBusError } from './amqp-errors.js';
import { type AmqpNames, bindingKey } from './names.js';
import type { ResolvedAmqpOptions } from './options.js';

/** What the group topology needs of its transport. */
export interface GroupContext {
  readonly names: AmqpNames;
  readonly options: ResolvedAmqpOptions;
  /** A new channel on the current connection. */
  createChannel(): Promise<Channel>;
}

/** The AMQP reply code of a channel error (404 not found, 405 locked by another connection …). */
function replyCode(err: unknown): number | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'number' ? code : undefined;
}

/**
 * Ephemeral groups and queue counts. An ephemeral group's queue, its retry queues and its
 * dead-letter queue are exclusive to the connection that declared them (classic, not durable):
 * deleted when its subscription closes, and by the broker itself when that connection goes
 * (a crashed process: at once when its socket closes, else after the heartbeat timeout). Its
 * dead-letter exchange is auto-delete: it goes with its queue's binding. It is not in the
 * registry queue: only its own connection can read its dead letters, by group.
 */
export class AmqpGroups {
  constructor(private readonly ctx: GroupContext) {}

  /** Arguments of an ephemeral group's queues: classic (exclusive queues cannot be quorum). */
  #args(): Record<string, unknown> {
    const o = this.ctx.options;
    const args: Record<string, unknown> = { 'x-queue-type': 'classic' };
    if (o.queueType === 'classic' && o.maxPriority > 0) args['x-max-priority'] = o.maxPriority;
    if (o.maxQueueLength !== undefined) {
      args['x-max-length'] = o.maxQueueLength;
      args['x-overflow'] = 'reject-publish';
    }
    return args;
  }

  /** The options of an ephemeral group's retry queue for one ladder step. */
  retryQueueOptions(group: string, stepMs: number) {
    return {
      exclusive: true,
      durable: false,
      arguments: {
        'x-queue-type': 'classic',
        'x-message-ttl': stepMs,
        'x-dead-letter-exchange': '',
        'x-dead-letter-routing-key': this.ctx.names.queue(group),
      },
    };
  }

  /**
   * Declares an ephemeral group's dead-letter exchange and queue and its queue, bound with
   * `pattern`. ConfigError when a queue of that name exists as a durable group's or another
   * connection's.
   */
  async declareEphemeral(group: string, pattern: string): Promise<void> {
    const n = this.ctx.names;
    const ch = await this.ctx.createChannel();
    try {
      await ch.assertExchange(n.exchange, 'topic', { durable: true });
      await ch.assertExchange(n.deadLetterExchange(group), 'fanout', { durable: false, autoDelete: true });
      await ch.assertQueue(n.deadLetterQueue(group), {
        exclusive: true,
        durable: false,
        arguments: { 'x-queue-type': 'classic' },
      });
      await ch.bindQueue(n.deadLetterQueue(group), n.deadLetterExchange(group), '');
      await ch.assertQueue(n.queue(group), {
        exclusive: true,
        durable: false,
        arguments: { ...this.#args(), 'x-dead-letter-exchange': n.deadLetterExchange(group) },
      });
      await ch.bindQueue(n.queue(group), n.exchange, bindingKey(pattern));
    } catch (err) {
      const code = replyCode(err);
      if (code === 405 || code === 406) {
        throw new ConfigError(
          `group ${group} exists as a durable group or as another connection's ephemeral group: ${(err as Error).message}`,
          { path: 'subscribe.group', cause: err },
        );
      }
      throw toBusError(err, 'declare');
    } finally {
      await ch.close().catch(() => {});
    }
  }

  /** Deletes an ephemeral group's queues (with what they hold) and its dead-letter exchange. */
  async removeEphemeral(group: string, retryQueues: Iterable<string>): Promise<void> {
    const n = this.ctx.names;
    const ch = await this.ctx.createChannel();
    try {
      for (const q of [n.queue(group), ...retryQueues, n.deadLetterQueue(group)]) await ch.deleteQueue(q);
      await ch.deleteExchange(n.deadLetterExchange(group));
    } finally {
      await ch.close().catch(() => {});
    }
  }

  /**
   * Ready messages of the group's queue and of its retry queues (one per ladder step), from
   * `queue.declare` passive. Zero for a queue that does not exist; a BusError for another
   * connection's ephemeral group, whose queues only that connection may inspect.
   */
  async readyCount(group: string): Promise<number> {
    const n = this.ctx.names;
    const queues = [n.queue(group), ...this.ctx.options.retryLadderMs.map((ms) => n.retry(group, ms))];
    let total = 0;
    let ch: Channel | undefined;
    try {
      for (const q of queues) {
        ch ??= await this.ctx.createChannel();
        try {
          total += (await ch.checkQueue(q)).messageCount;
        } catch (err) {
          ch = undefined; // the broker closed the channel
          if (replyCode(err) === 405) {
            throw new BusError(`group ${group} is another connection's ephemeral group`, { cause: err });
          }
          if (replyCode(err) !== 404) throw toBusError(err, 'groupStats');
        }
      }
    } finally {
      await ch?.close().catch(() => {});
    }
    return total;
  }
}
