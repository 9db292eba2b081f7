import type { BenchChannel, BenchSubject, Consumers } from './bench-subject.js';
import { connectStreams, type RedisClientKind, type StreamConnection, type StreamId } from './redis-clients.js';

/** How the raw Redis Streams baseline reads and names its keys. */
export const RAW_REDIS_DEFAULTS = Object.freeze({
  /** Entries per XREADGROUP. */
  readCount: 500,
  /** How long an idle XREADGROUP blocks: also how long `stop()` may wait for a reading consumer. */
  blockMs: 100,
  group: 'g',
});

/** The stream key of one channel: `bench:raw:<runId>:<client>:<name>`. */
export function rawStreamKey(runId: string, kind: RedisClientKind, name: string): string {
  return `bench:raw:${runId}:${kind}:${name}`;
}

/** Options of {@link RawRedisSubject.open}. */
export interface RawRedisSubjectOptions {
  /** Tells runs apart in key names; every key of the subject starts with `bench:raw:<runId>:`. */
  readonly runId: string;
  /** Payload bytes per entry. */
  readonly size: number;
}

/**
 * The floor for `redis://`: a plain Redis Streams queue on ioredis or node-redis. One stream and
 * one consumer group per channel; producers pipeline XADDs (fields `t`, the send stamp, and `b`,
 * the payload); each consumer reads on its own connection with XREADGROUP COUNT 500 BLOCK 100,
 * handles the entries and acks them with one XACK, sent together with its next read. No
 * envelopes, leases, retries or dead letters.
 */
export class RawRedisSubject implements BenchSubject {
  readonly label: string;
  readonly #publisher: StreamConnection;
  readonly #body: Buffer;
  readonly #keys: string[] = [];
  #closed = false;

  private constructor(
    readonly kind: RedisClientKind,
    private readonly url: string,
    private readonly options: RawRedisSubjectOptions,
    publisher: StreamConnection,
  ) {
    this.label = `raw ${kind}`;
    this.#publisher = publisher;
    this.#body = Buffer.alloc(options.size, 'x');
  }

  /** Connects the publishing connection; rejects if the client library is missing or Redis is unreachable. */
  static async open(kind: RedisClientKind, url: string, options: RawRedisSubjectOptions): Promise<RawRedisSubject> {
    return new RawRedisSubject(kind, url, options, await connectStreams(kind, url));
  }

  async channel(name: string): Promise<BenchChannel> {
    const { kind, url } = this;
    const key = rawStreamKey(this.options.runId, kind, name);
    const { group, readCount, blockMs } = RAW_REDIS_DEFAULTS;
    const publisher = this.#publisher;
    this.#keys.push(key);
    await publisher.createGroup(key, group);
    const body = this.#body;
    return {
      publishBatch: (count) => publisher.addMany(key, count, performance.now(), body),
      publishOne: (sentAtMs) => publisher.addOne(key, sentAtMs, body),
      async consume(consumers, onMessage): Promise<Consumers> {
        // Blocking reads would hold up every other command on a shared connection.
        const opening = await Promise.allSettled(Array.from({ length: consumers }, () => connectStreams(kind, url)));
        const connections = opening.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
        const refused = opening.find((r) => r.status === 'rejected');
        if (refused) {
          await Promise.all(connections.map((c) => c.quit()));
          throw refused.reason;
        }
        let stopped = false;
        let failure: { err: unknown } | undefined;
        const loop = async (connection: StreamConnection, consumer: string) => {
          let acked: Promise<void> | undefined;
          try {
            while (!stopped) {
              const ids: StreamId[] = await connection.readGroup(key, group, consumer, readCount, blockMs, onMessage);
              await acked;
              // Not awaited here: the XACK goes out right before the next XREADGROUP on the
              // same connection, so Redis handles it first and no round trip is spent on it.
              acked = ids.length > 0 ? connection.ack(key, group, ids) : undefined;
              // Observed at once so a failed ack is no unhandled rejection while the read waits.
              acked?.catch(() => {});
            }
          } finally {
            await acked;
          }
        };
        // A failed consumer stops the others; `stop()` reports the failure.
        const loops = connections.map((c, i) =>
          loop(c, `c${i}`).catch((err: unknown) => {
            failure ??= { err };
            stopped = true;
          }),
        );
        return {
          stop: async () => {
            stopped = true;
            // Every loop ends (within one BLOCK) before its connection goes.
            await Promise.all(loops);
            await Promise.all(connections.map((c) => c.quit()));
            if (failure) throw failure.err;
          },
        };
      },
    };
  }

  /** Deletes every stream the subject created and closes its connection; idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    try {
      await this.#publisher.del(this.#keys);
    } finally {
      await this.#publisher.quit();
    }
  }
}
