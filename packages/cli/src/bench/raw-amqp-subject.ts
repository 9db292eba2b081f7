import { ConnectionError } from '@agentbus/core';
import {
  type Channel,
  type ChannelModel,
  type ConfirmChannel,
  type ConsumeMessage,
  connect,
  type Options,
} from 'amqplib';
import type { BenchQueueType } from './bench-options.js';
import type { BenchChannel, BenchSubject, Consumers } from './bench-subject.js';

/** How the raw amqplib baseline consumes and names its queues. */
export const RAW_AMQP_DEFAULTS = Object.freeze({
  /** `basic.qos` of each consumer's channel: unacked deliveries it holds at once. */
  prefetch: 500,
  /** A consumer acks (`multiple`) at the end of each event-loop turn, or sooner after this many. */
  ackEvery: 250,
});

/** The queue of one channel: `bench.raw.<runId>.<name>`. */
export function rawAmqpQueue(runId: string, name: string): string {
  return `bench.raw.${runId}.${name}`;
}

/** Options of {@link RawAmqpSubject.open}. */
export interface RawAmqpSubjectOptions {
  /** Tells runs apart in queue names; every queue of the subject starts with `bench.raw.<runId>.`. */
  readonly runId: string;
  /** Payload bytes per message (at least the 8 of the send stamp). */
  readonly size: number;
  readonly queueType: BenchQueueType;
}

/**
 * Opens an amqplib connection with TCP_NODELAY (as the RabbitMQ Java and .NET clients do by
 * default; amqplib leaves Nagle's algorithm on, which holds small frames such as single publishes
 * and acks back); a refused or failed connect becomes a ConnectionError.
 */
export async function connectAmqp(url: string): Promise<ChannelModel> {
  let model: ChannelModel;
  try {
    model = await connect(url, { noDelay: true });
  } catch (err) {
    throw new ConnectionError(`cannot connect to RabbitMQ at ${redactAmqpUrl(url)}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  // An unobserved 'error' would crash the process; what failed shows up in the next operation.
  model.on('error', () => {});
  return model;
}

/** The URL without its password, for logs and reports. */
export function redactAmqpUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString().replace(/\/$/, '');
  } catch {
    return url.replace(/\/\/[^@/]*@/, '//***@');
  }
}

/** A channel whose server-side closes (a 404 of a check, say) reject the operation, not crash the process. */
async function quietChannel(model: ChannelModel): Promise<Channel> {
  const channel = await model.createChannel();
  channel.on('error', () => {});
  return channel;
}

/**
 * The floor for `amqp://`: plain amqplib on the same broker and queue type as agentbus. One
 * durable queue per channel (`x-queue-type: quorum`, or a classic durable queue with
 * x-max-priority 9 as agentbus declares), bound to a durable topic exchange of the subject's own
 * (as agentbus routes through its namespace's topic exchange; routing through the default
 * exchange straight to the queue is about 30 % faster on the broker), published to on a
 * ConfirmChannel with `persistent: true`, each publish batch
 * waiting for its own confirms; each consumer on a channel of its own with `prefetch(500)` and
 * manual acks, one `ack(msg, true)` (multiple) per event-loop turn's deliveries. Publisher and
 * consumers have connections of their own, with TCP_NODELAY. The send stamp is the first 8 bytes
 * of the body (a float64). No envelopes, retries or dead letters.
 */
export class RawAmqpSubject implements BenchSubject {
  readonly label = 'raw amqplib';
  readonly #publisher: ChannelModel;
  readonly #confirm: ConfirmChannel;
  readonly #queues: string[] = [];
  #closed = false;

  private constructor(
    private readonly url: string,
    private readonly options: RawAmqpSubjectOptions,
    publisher: ChannelModel,
    confirm: ConfirmChannel,
  ) {
    this.#publisher = publisher;
    this.#confirm = confirm;
  }

  /** Connects the publishing connection; rejects if RabbitMQ is unreachable. */
  static async open(url: string, options: RawAmqpSubjectOptions): Promise<RawAmqpSubject> {
    const model = await connectAmqp(url);
    try {
      const confirm = await model.createConfirmChannel();
      confirm.on('error', () => {});
      return new RawAmqpSubject(url, options, model, confirm);
    } catch (err) {
      await model.close().catch(() => {});
      throw err;
    }
  }

  /** The subject's topic exchange (deleted by `close()`). */
  get exchange(): string {
    return `bench.raw.${this.options.runId}`;
  }

  /** The queues the subject declared so far (all deleted by `close()`). */
  get queues(): readonly string[] {
    return this.#queues;
  }

  async channel(name: string): Promise<BenchChannel> {
    const queue = rawAmqpQueue(this.options.runId, name);
    const confirm = this.#confirm;
    const exchange = this.exchange;
    // The same queue arguments as agentbus's group queues of that type: classic ones carry
    // x-max-priority 9 (RabbitMQ serves a priority queue about half as fast as a plain one).
    const args = this.options.queueType === 'quorum' ? { 'x-queue-type': 'quorum' } : { 'x-max-priority': 9 };
    this.#queues.push(queue);
    await confirm.assertQueue(queue, { durable: true, arguments: args });
    await confirm.assertExchange(this.exchange, 'topic', { durable: true });
    await confirm.bindQueue(queue, this.exchange, queue);
    const size = Math.max(8, this.options.size);
    const template = Buffer.alloc(size, 'x');
    const body = (sentAtMs: number) => {
      // A fresh buffer per publish call: amqplib may still hold it when the next call writes.
      const b = Buffer.from(template);
      b.writeDoubleLE(sentAtMs, 0);
      return b;
    };
    const publishOptions: Options.Publish = { persistent: true };
    return {
      publishBatch: (count) => {
        const b = body(performance.now());
        return new Promise<void>((resolve, reject) => {
          // Confirms of this batch only: other batches may be in flight on the same channel.
          let left = count;
          let failed: unknown;
          const confirmed = (err: unknown) => {
            if (err) failed ??= err;
            if (--left === 0) {
              if (failed) reject(failed instanceof Error ? failed : new Error(`publish nacked: ${String(failed)}`));
              else resolve();
            }
          };
          for (let i = 0; i < count; i++) confirm.publish(exchange, queue, b, publishOptions, confirmed);
        });
      },
      publishOne: (sentAtMs) =>
        new Promise<void>((resolve, reject) => {
          confirm.publish(exchange, queue, body(sentAtMs), publishOptions, (err: unknown) =>
            err ? reject(err instanceof Error ? err : new Error(`publish nacked: ${String(err)}`)) : resolve(),
          );
        }),
      consume: (consumers, onMessage) => this.#consume(queue, consumers, onMessage),
    };
  }

  /** `consumers` consumers, each on a channel of its own, all on one connection of their own. */
  async #consume(queue: string, consumers: number, onMessage: (sentAtMs: number) => void): Promise<Consumers> {
    const model = await connectAmqp(this.url);
    const running: { channel: Channel; tag: string; flush: () => void }[] = [];
    let failure: { err: unknown } | undefined;
    try {
      for (let i = 0; i < consumers; i++) {
        const channel = await model.createChannel();
        channel.on('error', (err: unknown) => {
          failure ??= { err };
        });
        await channel.prefetch(RAW_AMQP_DEFAULTS.prefetch);
        // Deliveries on a channel come in delivery-tag order and the handler is synchronous, so
        // one multiple ack of the latest delivery settles everything before it.
        let last: ConsumeMessage | undefined;
        let unacked = 0;
        let scheduled = false;
        const flush = () => {
          scheduled = false;
          if (last === undefined) return;
          channel.ack(last, true);
          last = undefined;
          unacked = 0;
        };
        const { consumerTag } = await channel.consume(
          queue,
          (msg) => {
            if (msg === null) {
              failure ??= { err: new Error(`RabbitMQ cancelled the consumer of ${queue}`) };
              return;
            }
            onMessage(msg.content.readDoubleLE(0));
            last = msg;
            if (++unacked >= RAW_AMQP_DEFAULTS.ackEvery) flush();
            else if (!scheduled) {
              scheduled = true;
              setImmediate(flush);
            }
          },
          { noAck: false },
        );
        running.push({ channel, tag: consumerTag, flush });
      }
    } catch (err) {
      await model.close().catch(() => {});
      throw err;
    }
    let stopped: Promise<void> | undefined;
    return {
      stop: () => {
        stopped ??= (async () => {
          try {
            await Promise.all(running.map((r) => r.channel.cancel(r.tag)));
            for (const r of running) r.flush();
            await Promise.all(running.map((r) => r.channel.close()));
          } finally {
            await model.close().catch(() => {});
          }
          if (failure) throw failure.err;
        })();
        return stopped;
      },
    };
  }

  /** Deletes every queue the subject declared and closes its connection; idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    try {
      // A fresh channel: the publishing one may have been closed by a failure.
      const channel = await quietChannel(this.#publisher);
      for (const queue of this.#queues) await channel.deleteQueue(queue);
      await channel.deleteExchange(this.exchange);
      await channel.close();
    } finally {
      await this.#publisher.close().catch(() => {});
    }
  }
}

/** What {@link deleteAmqpEntities} found and deleted. */
export interface AmqpDeleted {
  readonly queues: string[];
  readonly exchanges: string[];
}

/**
 * Deletes those of `queues` and `exchanges` that exist, on a connection of its own; resolves with
 * what it deleted. Each name gets a throwaway channel of its own, since a check of a missing one
 * (`checkQueue`/`checkExchange`) closes its channel with a 404; they run side by side, as opening
 * a channel after a closed one can take tens of milliseconds.
 */
export async function deleteAmqpEntities(
  url: string,
  queues: readonly string[],
  exchanges: readonly string[],
): Promise<AmqpDeleted> {
  const model = await connectAmqp(url);
  /** Deletes `name` if a passive check finds it; says whether it did. */
  const deleteIfThere = async (check: (c: Channel) => Promise<unknown>, del: (c: Channel) => Promise<unknown>) => {
    const channel = await quietChannel(model);
    try {
      await check(channel);
    } catch (err) {
      if ((err as { code?: unknown }).code === 404) return false;
      throw err;
    }
    await del(channel);
    await channel.close();
    return true;
  };
  try {
    const queueDeleted = await Promise.all(
      queues.map((q) =>
        deleteIfThere(
          (c) => c.checkQueue(q),
          (c) => c.deleteQueue(q),
        ),
      ),
    );
    const exchangeDeleted = await Promise.all(
      exchanges.map((e) =>
        deleteIfThere(
          (c) => c.checkExchange(e),
          (c) => c.deleteExchange(e),
        ),
      ),
    );
    return {
      queues: queues.filter((_, i) => queueDeleted[i]),
      exchanges: exchanges.filter((_, i) => exchangeDeleted[i]),
    };
  } finally {
    await model.close().catch(() => {});
  }
}
