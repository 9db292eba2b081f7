import { ConnectionError } from '@agentbus/core';
import {
  AckPolicy,
  type ConsumerMessages,
  DeliverPolicy,
  JetStreamApiCodes,
  JetStreamApiError,
  type JetStreamClient,
  type JetStreamManager,
  jetstream,
  jetstreamManager,
  type PubAck,
  RetentionPolicy,
  StorageType,
} from '@nats-io/jetstream';
import { connect, type NatsConnection, type NodeConnectionOptions } from '@nats-io/transport-node';
import type { BenchChannel, BenchSubject, Consumers } from './bench-subject.js';

/** Retention policies a raw JetStream stream of the bench can have. */
export type RawNatsRetention = 'interest' | 'limits';

/** How the raw JetStream baseline publishes, consumes and names its stream. */
export const RAW_NATS_DEFAULTS = Object.freeze({
  /** `js.publish` requests (publish → PubAck) the subject keeps in flight at most. */
  publishWindow: 200,
  /** `consume({ max_messages })` of each consumer: messages it pulls ahead (the bench's prefetch). */
  maxMessages: 500,
  /**
   * `max_ack_pending` of each durable consumer: above what its competing clients pull ahead at
   * once (consumers × 500), so the server never holds deliveries back (its default is 1,000).
   */
  maxAckPending: 20_000,
  /**
   * The stream's retention: interest, so an acked message is deleted from the file store as a
   * queue does (and as the agentbus stream does once every group acked it).
   */
  retention: 'interest' satisfies RawNatsRetention as RawNatsRetention,
});

/** The file stream of one run: `BENCH_RAW_<runId>`. */
export function rawNatsStream(runId: string): string {
  return `BENCH_RAW_${runId}`;
}

/** The subject of one channel: `bench.raw.<runId>.<name>` (its durable consumer is `<name>`). */
export function rawNatsSubject(runId: string, name: string): string {
  return `bench.raw.${runId}.${name}`;
}

/** Options of {@link RawNatsSubject.open}. */
export interface RawNatsSubjectOptions {
  /** Tells runs apart: the stream is `BENCH_RAW_<runId>`, its subjects `bench.raw.<runId>.>`. */
  readonly runId: string;
  /** Payload bytes per message (at least the 8 of the send stamp). */
  readonly size: number;
  /** Default {@link RAW_NATS_DEFAULTS.retention}. */
  readonly retention?: RawNatsRetention;
}

/**
 * Connection options for a `nats://[user[:pass]@]host[:port]` URL: nats.js takes no credentials
 * in a server URL, so they become `user`/`pass` (or `token` when there is no password).
 */
export function natsConnectOptions(url: string): NodeConnectionOptions {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return { servers: url };
  }
  const user = decodeURIComponent(u.username);
  const pass = decodeURIComponent(u.password);
  const server = `${u.protocol}//${u.host}`;
  if (user === '') return { servers: server };
  return pass === '' ? { servers: server, token: user } : { servers: server, user, pass };
}

/** The URL without its password (or token), for logs and reports. */
export function redactNatsUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    else if (u.username) u.username = '***';
    return u.toString().replace(/\/$/, '');
  } catch {
    return url.replace(/\/\/[^@/]*@/, '//***@');
  }
}

/**
 * Connects to NATS (no reconnects: a lost server fails the run); a refused connect becomes a
 * ConnectionError. With `noAsyncTraces`, as a nats.js user tuning for speed sets it: by default
 * every request (each `js.publish`) captures two stack traces up front, in case it fails, which
 * costs about a quarter of the client's CPU in this benchmark.
 */
export async function connectNats(url: string): Promise<NatsConnection> {
  try {
    return await connect({ ...natsConnectOptions(url), name: 'agentbus-bench', reconnect: false, noAsyncTraces: true });
  } catch (err) {
    throw new ConnectionError(`cannot connect to NATS at ${redactNatsUrl(url)}: ${(err as Error).message}`, {
      cause: err,
    });
  }
}

/** Whether `err` is JetStream's "stream not found" (10059). */
function isStreamNotFound(err: unknown): boolean {
  return err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamNotFound;
}

/** Deletes those of `streams` that exist, on `jsm`; resolves with the ones it deleted. */
async function deleteStreamsOn(jsm: JetStreamManager, streams: readonly string[]): Promise<string[]> {
  const deleted = await Promise.all(
    streams.map(async (name) => {
      try {
        return await jsm.streams.delete(name);
      } catch (err) {
        if (isStreamNotFound(err)) return false;
        throw err;
      }
    }),
  );
  return streams.filter((_, i) => deleted[i]);
}

/**
 * Deletes those of `streams` that exist (a missing one is no error), on a connection of its own;
 * resolves with the names it deleted.
 */
export async function deleteNatsStreams(url: string, streams: readonly string[]): Promise<string[]> {
  const nc = await connectNats(url);
  try {
    return await deleteStreamsOn(await jetstreamManager(nc), streams);
  } finally {
    await nc.close().catch(() => {});
  }
}

/**
 * Keeps at most `limit` publishes in flight: `acquire()` resolves (at once while there is room)
 * with a slot, handed on in FIFO order to the next waiter when `release()` frees it.
 */
export class PublishWindow {
  #inFlight = 0;
  readonly #waiting: (() => void)[] = [];

  constructor(private readonly limit: number) {}

  /** Undefined when a slot was free and is now taken; otherwise a promise of one. */
  acquire(): Promise<void> | undefined {
    if (this.#inFlight < this.limit) {
      this.#inFlight++;
      return undefined;
    }
    return new Promise((resolve) => this.#waiting.push(resolve));
  }

  release(): void {
    const next = this.#waiting.shift();
    if (next) next();
    else this.#inFlight--;
  }

  /** Slots taken (at most `limit`). */
  get inFlight(): number {
    return this.#inFlight;
  }
}

/** The send stamp in the payload's first 8 bytes (a float64, little-endian). */
function stampOf(data: Uint8Array): number {
  return Buffer.from(data.buffer, data.byteOffset, 8).readDoubleLE(0);
}

/**
 * The floor for `nats://`: plain nats.js JetStream on the same server as agentbus. One
 * file-storage stream per run (`BENCH_RAW_<runId>`, subjects `bench.raw.<runId>.>`, one replica,
 * interest retention unless told otherwise) and one durable pull consumer per channel (explicit
 * acks, filtered on the channel's subject, `max_ack_pending` 20,000). Publishes are `js.publish`
 * requests, each waiting for its PubAck, at most 200 in flight for the whole subject: every
 * publish batch of the bench issues its messages as slots free up, so with the bench's default
 * 4 batches of 100 exactly 200 are in flight. Each consumer is a `consume()` with a callback
 * (no async iterator) pulling `max_messages` 500, and acks each message with `msg.ack()` after
 * handling it; the consumers of a channel share a connection of their own, the publisher has
 * another, both with `noAsyncTraces`. The send stamp is the first 8 bytes of the body (a float64). No envelopes, retries or
 * dead letters.
 */
export class RawNatsSubject implements BenchSubject {
  readonly label = 'raw nats.js';
  readonly #nc: NatsConnection;
  readonly #js: JetStreamClient;
  readonly #jsm: JetStreamManager;
  readonly #window = new PublishWindow(RAW_NATS_DEFAULTS.publishWindow);
  readonly #template: Uint8Array;
  readonly #channels: string[] = [];
  #closed = false;

  private constructor(
    private readonly url: string,
    private readonly options: RawNatsSubjectOptions,
    nc: NatsConnection,
    jsm: JetStreamManager,
  ) {
    this.#nc = nc;
    this.#jsm = jsm;
    this.#js = jetstream(nc);
    this.#template = Buffer.alloc(Math.max(8, options.size), 'x');
  }

  /** Connects and creates the run's stream; rejects if NATS or JetStream is unavailable. */
  static async open(url: string, options: RawNatsSubjectOptions): Promise<RawNatsSubject> {
    const nc = await connectNats(url);
    try {
      const jsm = await jetstreamManager(nc);
      await jsm.streams.add({
        name: rawNatsStream(options.runId),
        subjects: [`bench.raw.${options.runId}.>`],
        storage: StorageType.File,
        retention:
          (options.retention ?? RAW_NATS_DEFAULTS.retention) === 'interest'
            ? RetentionPolicy.Interest
            : RetentionPolicy.Limits,
        num_replicas: 1,
      });
      return new RawNatsSubject(url, options, nc, jsm);
    } catch (err) {
      await nc.close().catch(() => {});
      throw err;
    }
  }

  /** The run's stream (deleted by `close()`). */
  get stream(): string {
    return rawNatsStream(this.options.runId);
  }

  /** The channels (durable consumers) created so far. */
  get channels(): readonly string[] {
    return this.#channels;
  }

  async channel(name: string): Promise<BenchChannel> {
    const subject = rawNatsSubject(this.options.runId, name);
    const stream = this.stream;
    // Created before anything is published, so (with interest retention) the stream keeps
    // every message of the channel for it.
    await this.#jsm.consumers.add(stream, {
      durable_name: name,
      filter_subject: subject,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      max_ack_pending: RAW_NATS_DEFAULTS.maxAckPending,
    });
    this.#channels.push(name);
    const js = this.#js;
    const window = this.#window;
    const template = this.#template;
    const body = (sentAtMs: number) => {
      // A fresh buffer per publish call: nats.js keeps a reference until it writes the socket.
      const b = Buffer.from(template);
      b.writeDoubleLE(sentAtMs, 0);
      return b;
    };
    const release = () => window.release();
    const publish = async (data: Uint8Array): Promise<PubAck> => {
      const slot = window.acquire();
      if (slot) await slot;
      try {
        return await js.publish(subject, data);
      } finally {
        release();
      }
    };
    return {
      async publishBatch(count) {
        const data = body(performance.now());
        const acks: Promise<PubAck>[] = new Array(count);
        // Each message takes a slot of the window as soon as one is free; the batch resolves once
        // all of its messages are acked.
        for (let i = 0; i < count; i++) {
          const slot = window.acquire();
          if (slot) await slot;
          const ack = js.publish(subject, data).finally(release);
          // Observed at once: a failure must not go unhandled while the loop waits for a slot.
          ack.catch(() => {});
          acks[i] = ack;
        }
        await Promise.all(acks);
      },
      async publishOne(sentAtMs) {
        await publish(body(sentAtMs));
      },
      consume: (consumers, onMessage) => this.#consume(name, consumers, onMessage),
    };
  }

  /** `consumers` pull consumers on the channel's durable, all on one connection of their own. */
  async #consume(durable: string, consumers: number, onMessage: (sentAtMs: number) => void): Promise<Consumers> {
    const nc = await connectNats(this.url);
    const running: ConsumerMessages[] = [];
    let failure: { err: unknown } | undefined;
    let stopping = false;
    try {
      const js = jetstream(nc);
      for (let i = 0; i < consumers; i++) {
        const consumer = await js.consumers.get(this.stream, durable);
        const messages = await consumer.consume({
          max_messages: RAW_NATS_DEFAULTS.maxMessages,
          callback: (msg) => {
            onMessage(stampOf(msg.data));
            msg.ack();
          },
        });
        running.push(messages);
        // Consuming ends early only on a failure (a lost consumer or connection): stop() reports it.
        void messages.closed().then((err) => {
          if (!stopping) failure ??= { err: err ?? new Error(`the consumer of ${durable} stopped`) };
        });
      }
    } catch (err) {
      await nc.close().catch(() => {});
      throw err;
    }
    let stopped: Promise<void> | undefined;
    return {
      stop: () => {
        stopped ??= (async () => {
          stopping = true;
          try {
            await Promise.all(running.map((m) => m.close()));
            // Sends the acks still buffered before the connection goes.
            await nc.flush();
          } finally {
            await nc.close().catch(() => {});
          }
          if (failure) throw failure.err;
        })();
        return stopped;
      },
    };
  }

  /** Deletes the run's stream (and with it its consumers) and closes the connection; idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    try {
      await deleteStreamsOn(this.#jsm, [this.stream]);
    } finally {
      await this.#nc.close().catch(() => {});
    }
  }
}
