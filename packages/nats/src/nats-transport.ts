import {
  assertSubscribeOptions,
  assertTopic,
  assertTransportBatch,
  type BusError,
  ClosedError,
  ConfigError,
  ConnectionError,
  type GroupStats,
  type HealthReport,
  type ManagedDelivery,
  type Subscription,
  TimeoutError,
  type Transport,
  type TransportCapabilities,
  type TransportMessage,
  type TransportSubscribeOptions,
} from '@agentbus/core';
import {
  AckPolicy,
  DeliverPolicy,
  DiscardPolicy,
  type JetStreamClient,
  type JetStreamManager,
  jetstream,
  jetstreamManager,
  RetentionPolicy,
  StorageType,
} from '@nats-io/jetstream';
import { connect, headers, type Msg, type MsgHdrs, type NatsConnection } from '@nats-io/transport-node';
import { H, NatsNames } from './names.js';
import { NatsDeadLetterStore } from './nats-dead-letter-store.js';
import { NatsGroups } from './nats-groups.js';
import { NatsSubscription } from './nats-subscription.js';
import { type NatsTransportOptions, type ResolvedNatsOptions, resolveNatsOptions } from './options.js';
import { type Outgoing, PublishAcks } from './publish-acks.js';

const CAPABILITIES: TransportCapabilities = Object.freeze({
  persistent: true,
  crossProcess: true,
  // JetStream delivers in stream order; there is no priority to read by (see the README).
  priority: false,
  delayedDelivery: true,
  ttl: true,
  wildcards: true,
  deadLetterReplay: true,
});

const nanos = (ms: number) => Math.round(ms * 1_000_000);
const utf8 = new TextEncoder();
/** Last-error records kept at most (the oldest go first); each is at most LAST_ERROR_MAX_BYTES of text. */
const LAST_ERROR_MAX_RECORDS = 100_000;

/** Maps a client failure to a BusError: lost connections and timeouts are retryable. */
function toBusError(err: unknown, operation: string): BusError {
  if (err instanceof Error && 'code' in err && typeof (err as { retryable?: unknown }).retryable === 'boolean') {
    return err as BusError;
  }
  const message = err instanceof Error ? err.message : String(err);
  const name = err instanceof Error ? err.name : '';
  if (/timeout/i.test(name) || /timeout/i.test(message)) {
    return new TimeoutError(`nats ${operation} timed out: ${message}`, { cause: err });
  }
  return new ConnectionError(`nats ${operation} failed: ${message}`, { cause: err });
}

/**
 * NATS JetStream: one file-backed stream per namespace (interest retention: a message is kept
 * until every group bound to its topic acked it), a durable pull consumer per group (filter =
 * the group's pattern), NAK with delay for retries, a dead-letter stream. See the README's NATS
 * section.
 */
export class NatsTransport implements Transport {
  readonly name = 'nats';
  readonly capabilities = CAPABILITIES;
  readonly names: NatsNames;
  readonly deadLetters: NatsDeadLetterStore;
  readonly #options: ResolvedNatsOptions;
  readonly #subs = new Set<NatsSubscription>();
  readonly #groups: NatsGroups;
  #sweepTimer: NodeJS.Timeout | undefined;
  #nc: NatsConnection | undefined;
  #js: JetStreamClient | undefined;
  #jsm: JetStreamManager | undefined;
  #acks: PublishAcks | undefined;
  #connecting: Promise<NatsConnection> | undefined;
  #streams: Promise<void> | undefined;
  /** The last-error stream, declared by the first nack with an error. */
  #lastErrorStream: Promise<void> | undefined;
  /** The connection is lost and the client is reconnecting: publishes fail at once meanwhile. */
  #down = false;
  #closing: Promise<void> | undefined;

  constructor(options: NatsTransportOptions = {}) {
    this.#options = resolveNatsOptions(options);
    this.names = new NatsNames(this.#options.namespace);
    this.#groups = new NatsGroups({
      names: this.names,
      manager: async () => {
        // Also while closing: subscriptions closing then remove their ephemeral groups.
        if (this.#jsm && this.#nc && !this.#nc.isClosed() && this.#streams) await this.#streams;
        else await this.#ready();
        return this.#jsm as JetStreamManager;
      },
    });
    this.deadLetters = new NatsDeadLetterStore({
      names: this.names,
      manager: async () => {
        await this.#ready();
        return this.#jsm as JetStreamManager;
      },
      replay: async (topic, body, hdrs, msgId) => {
        await this.#ready();
        const h = headers();
        for (const [k, v] of Object.entries(hdrs)) h.set(k, v);
        await (this.#js as JetStreamClient).publish(this.names.subject(topic), body, {
          msgID: msgId,
          headers: h,
          timeout: this.#options.publishTimeoutMs,
        });
      },
    });
  }

  get closed(): boolean {
    return this.#closing !== undefined;
  }

  async connect(): Promise<void> {
    await this.#ready();
  }

  #connection(): Promise<NatsConnection> {
    if (this.#closing) return Promise.reject(new ClosedError('transport is closed'));
    if (this.#nc) return Promise.resolve(this.#nc);
    this.#connecting ??= (async () => {
      const o = this.#options;
      let nc: NatsConnection;
      try {
        nc = await connect({
          servers: o.servers,
          name: `agentbus:${o.namespace}`,
          reconnect: true,
          maxReconnectAttempts: -1,
          reconnectTimeWait: o.reconnect.waitMs,
          reconnectJitter: o.reconnect.jitterMs,
          waitOnFirstConnect: false,
          // No stack captured per request: a large share of the client's CPU otherwise.
          noAsyncTraces: true,
        });
      } catch (err) {
        throw toBusError(err, 'connect');
      } finally {
        this.#connecting = undefined;
      }
      if (this.#closing) {
        await nc.close().catch(() => {});
        throw new ClosedError('transport is closed');
      }
      this.#nc = nc;
      this.#acks = new PublishAcks(nc, o.publishTimeoutMs, () => {});
      this.#js = jetstream(nc, { timeout: o.publishTimeoutMs });
      this.#jsm = await jetstreamManager(nc, { timeout: o.publishTimeoutMs }).catch((err: unknown) => {
        throw toBusError(err, 'connect');
      });
      void this.#watch(nc);
      if (o.ephemeralSweepIntervalMs > 0) {
        this.#sweepTimer = setInterval(() => void this.sweep().catch(() => {}), o.ephemeralSweepIntervalMs);
        this.#sweepTimer.unref();
      }
      return nc;
    })();
    return this.#connecting;
  }

  /** After a reconnect the server has forgotten the subscriptions' pull requests: ask again. */
  async #watch(nc: NatsConnection): Promise<void> {
    for await (const s of nc.status()) {
      if (s.type === 'disconnect') {
        this.#down = true;
        // Their acknowledgements are lost with the connection: fail them now (the message may
        // or may not be stored; a retry with the same id is stored once).
        this.#acks?.failAll(new ConnectionError('nats connection lost before the publish was acknowledged'));
        void this.#whenBack(nc);
      }
      if (s.type === 'reconnect') this.#back();
    }
  }

  /** Up again: publishes go through, subscriptions ask again for what they had requested. */
  #back(): void {
    if (!this.#down) return;
    this.#down = false;
    for (const sub of this.#subs) sub.resume();
  }

  /**
   * Does not rely on the 'reconnect' status alone: a round trip that succeeds (it waits for the
   * reconnection) also ends the outage, so a missed status cannot leave publishes failing and
   * subscriptions idle for good.
   */
  async #whenBack(nc: NatsConnection): Promise<void> {
    let probe: Promise<boolean> | undefined;
    while (this.#down && !this.#closing && this.#nc === nc && !nc.isClosed()) {
      // One round trip at a time: it may wait in the client until the reconnection.
      probe ??= nc.rtt().then(
        () => true,
        () => false,
      );
      const ok = await Promise.race([probe, new Promise<'wait'>((r) => setTimeout(() => r('wait'), 250))]);
      if (ok === true) this.#back();
      else if (ok === false) {
        probe = undefined;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  /**
   * The server answered as if the streams or a consumer were gone (a server that lost its store):
   * declare them again before the next publish or pull.
   */
  #lostState(err: unknown): void {
    const text = err instanceof Error ? err.message : String(err);
    // Not on "no responders": JetStream answers nothing while it starts, and declaring the stream
    // then could race its restore.
    if (/stream not found|consumer not found|consumer deleted/i.test(text)) {
      this.#streams = undefined;
      this.#lastErrorStream = undefined;
    }
  }

  /** Declares a subscription's consumer again (after the server lost it). */
  async #redeclare(sub: NatsSubscription, pattern: string, options: TransportSubscribeOptions): Promise<void> {
    this.#streams = undefined;
    await this.#ready();
    if (options.ephemeral === true) await this.#declareEphemeral(sub.consumer, pattern, options);
    else await this.#declareConsumer(sub.consumer, sub.group, pattern, options);
  }

  /** Connected, with both streams declared. */
  async #ready(): Promise<void> {
    await this.#connection();
    this.#streams ??= this.#declareStreams().catch((err: unknown) => {
      this.#streams = undefined;
      throw err;
    });
    await this.#streams;
  }

  async #declareStreams(): Promise<void> {
    const jsm = this.#jsm as JetStreamManager;
    const o = this.#options;
    const storage = o.storage === 'file' ? StorageType.File : StorageType.Memory;
    const want = [
      {
        name: this.names.stream,
        subjects: [this.names.subject('>')],
        retention: RetentionPolicy.Interest,
        storage,
        num_replicas: o.replicas,
        duplicate_window: nanos(o.duplicateWindowMs),
        discard: DiscardPolicy.Old,
        allow_direct: true,
      },
      {
        name: this.names.deadLetterStream,
        subjects: [this.names.deadLetterFilter()],
        retention: RetentionPolicy.Limits,
        storage,
        num_replicas: o.replicas,
        allow_direct: true,
      },
    ];
    for (const cfg of want) {
      try {
        await jsm.streams.info(cfg.name);
      } catch {
        try {
          await jsm.streams.add(cfg);
        } catch (err) {
          // Another process created it meanwhile: fine if it is there now.
          await jsm.streams.info(cfg.name).catch(() => {
            throw new ConfigError(`cannot create stream ${cfg.name}: ${(err as Error).message}`, { cause: err });
          });
        }
      }
    }
  }

  async publish(batch: readonly TransportMessage[]): Promise<void> {
    assertTransportBatch(batch);
    if (this.#closing) throw new ClosedError('transport is closed');
    if (batch.length === 0) return;
    if (this.#down) {
      throw new ConnectionError('NATS is unreachable; reconnecting (publishes fail fast meanwhile)');
    }
    await this.#ready();
    const items: Outgoing[] = new Array(batch.length);
    for (let i = 0; i < batch.length; i++) {
      const m = batch[i] as TransportMessage;
      // Only what differs from the defaults travels: the id is Nats-Msg-Id (JetStream's dedup
      // key), the publish time is the stream's own timestamp, priority 4 and no headers are implied.
      const h = headers();
      h.set('Nats-Msg-Id', m.id);
      for (const _ in m.headers) {
        h.set(H.headers, JSON.stringify(m.headers));
        break;
      }
      if (m.priority !== 4) h.set(H.priority, String(m.priority));
      if (m.expiresAtMs !== undefined) h.set(H.expiresAt, String(m.expiresAtMs));
      items[i] = { subject: this.names.subject(m.topic), data: m.body, headers: h };
    }
    try {
      await (this.#acks as PublishAcks).send(items);
    } catch (err) {
      this.#lostState(err);
      throw toBusError(err, 'publish');
    }
  }

  /** Stores a dead letter (the original's headers, the topic and the record's fields). */
  async #deadLetter(group: string, msg: Msg, topic: string, fields: Record<string, string>): Promise<void> {
    const h: MsgHdrs = headers();
    for (const name of [H.id, H.headers, H.priority, H.expiresAt, H.publishedAt]) {
      if (msg.headers?.has(name)) h.set(name, msg.headers.get(name));
    }
    if (!h.has(H.id) && msg.headers?.has('Nats-Msg-Id')) h.set(H.id, msg.headers.get('Nats-Msg-Id'));
    h.set(H.topic, topic);
    for (const [k, v] of Object.entries(fields)) h.set(k, v);
    try {
      await (this.#js as JetStreamClient).publish(this.names.deadLetterSubject(group, topic), msg.data, {
        headers: h,
        timeout: this.#options.publishTimeoutMs,
      });
    } catch (err) {
      throw toBusError(err, 'dead-letter');
    }
  }

  /**
   * Declares `AB_<ns>_ERR`: one subject per (group, message), only the newest record kept, records
   * dropped after lastErrorTtlMs and beyond LAST_ERROR_MAX_RECORDS.
   */
  #declareLastErrorStream(): Promise<void> {
    this.#lastErrorStream ??= (async () => {
      await this.#ready();
      const jsm = this.#jsm as JetStreamManager;
      const o = this.#options;
      const name = this.names.lastErrorStream;
      try {
        await jsm.streams.info(name);
        return;
      } catch {
        // not there yet
      }
      try {
        await jsm.streams.add({
          name,
          subjects: [this.names.lastErrorFilter()],
          retention: RetentionPolicy.Limits,
          storage: o.storage === 'file' ? StorageType.File : StorageType.Memory,
          num_replicas: o.replicas,
          max_age: nanos(o.lastErrorTtlMs),
          max_msgs_per_subject: 1,
          max_msgs: LAST_ERROR_MAX_RECORDS,
          discard: DiscardPolicy.Old,
          allow_direct: true,
        });
      } catch (err) {
        // Another process created it meanwhile: fine if it is there now.
        await jsm.streams.info(name).catch(() => {
          throw toBusError(err, 'declare the last-error stream');
        });
      }
    })().catch((err: unknown) => {
      this.#lastErrorStream = undefined;
      throw err;
    });
    return this.#lastErrorStream;
  }

  /**
   * Keeps the error a consumer nacked the message at `streamSeq` with, on its `delivered`-th
   * delivery, for the redelivery (any process) to read. Never rejects: without the record the
   * redelivery just has no lastError.
   */
  async #recordLastError(consumer: string, streamSeq: number, delivered: number, error: string): Promise<void> {
    try {
      await this.#declareLastErrorStream();
      const h = headers();
      h.set(H.delivered, String(delivered));
      await (this.#js as JetStreamClient).publish(
        this.names.lastErrorSubject(consumer, streamSeq),
        utf8.encode(error),
        {
          headers: h,
          timeout: this.#options.publishTimeoutMs,
        },
      );
    } catch {
      // Not recorded (unreachable, or the stream was deleted): declare it again next time.
      this.#lastErrorStream = undefined;
    }
  }

  /**
   * The error recorded by the nack of the delivery just before this `delivered`-th one, or
   * undefined (none recorded, or the delivery before ended otherwise: its lease ran out).
   */
  async #lastErrorOf(consumer: string, streamSeq: number, delivered: number): Promise<string | undefined> {
    const jsm = this.#jsm;
    if (!jsm) return undefined;
    try {
      const m = await jsm.direct.getMessage(this.names.lastErrorStream, {
        last_by_subj: this.names.lastErrorSubject(consumer, streamSeq),
      });
      if (!m || Number(m.header?.get(H.delivered)) !== delivered - 1) return undefined;
      return m.string();
    } catch {
      return undefined; // no such stream yet (nobody nacked with an error), or unreachable
    }
  }

  /**
   * Declares the group's consumer (durable, see #declareConsumer) and pulls from it. With
   * `ephemeral`, the consumer is non-durable with `inactive_threshold` = ephemeralInactiveMs and
   * `max_ack_pending` = prefetch (see NatsGroups), deleted with the group's dead letters when the
   * subscription closes, and by the server once its process died. A group is either durable or
   * ephemeral, and an ephemeral one has one subscriber: otherwise ConfigError.
   */
  async subscribe(pattern: string, options: TransportSubscribeOptions): Promise<Subscription<ManagedDelivery>> {
    if (this.#closing) throw new ClosedError('transport is closed');
    assertSubscribeOptions(pattern, options);
    await this.#ready();
    const { group } = options;
    const ephemeral = options.ephemeral === true;
    const consumer = this.names.consumer(group);
    if (ephemeral) await this.#declareEphemeral(consumer, pattern, options);
    else await this.#declareConsumer(consumer, group, pattern, options);
    const sub = new NatsSubscription(
      {
        names: this.names,
        clock: this.#options.clock,
        connection: () => {
          if (!this.#nc) throw new ConnectionError('not connected');
          return this.#nc;
        },
        deadLetter: (g, msg, topic, fields) => this.#deadLetter(g, msg, topic, fields),
        recordLastError: (c, seq, delivered, error) => this.#recordLastError(c, seq, delivered, error),
        lastErrorOf: (c, seq, delivered) => this.#lastErrorOf(c, seq, delivered),
        consumerLost: (s) => this.#redeclare(s, pattern, options),
      },
      group,
      consumer,
      options.prefetch,
      options.ackTimeoutMs,
      ephemeral,
    );
    this.#subs.add(sub);
    const close = sub.close.bind(sub);
    let closing: Promise<void> | undefined;
    sub.close = () => {
      closing ??= (async () => {
        this.#subs.delete(sub);
        await close();
        // Not removed (unreachable): the server deletes the consumer after ephemeralInactiveMs,
        // and a sweep its dead letters.
        if (ephemeral) await this.#groups.remove(consumer, group).catch(() => {});
      })();
      return closing;
    };
    return sub;
  }

  async #declareEphemeral(consumer: string, pattern: string, options: TransportSubscribeOptions): Promise<void> {
    try {
      await this.#groups.declareEphemeral(consumer, options.group, pattern, options, this.#options.ephemeralInactiveMs);
    } catch (err) {
      if (err instanceof ConfigError) throw err;
      throw toBusError(err, 'subscribe');
    }
  }

  /**
   * The consumers whose filter matches `topic`: one `CONSUMER.LIST` of the stream (paged by 256).
   * An ephemeral group of a dead process counts until the server deleted it.
   */
  async routeCount(topic: string): Promise<number> {
    if (this.#closing) throw new ClosedError('transport is closed');
    assertTopic(topic);
    try {
      return await this.#groups.routeCount(topic);
    } catch (err) {
      throw toBusError(err, 'routeCount');
    }
  }

  /**
   * The group's consumer info: backlog = `num_pending` (matching messages not yet delivered; a
   * replay meant for another group counts until this group skips it), inFlight =
   * `num_ack_pending` (delivered, not acked, in any process; a message nacked with a delay counts
   * here until redelivered). Zeros for an unknown group.
   */
  async groupStats(group: string): Promise<GroupStats> {
    if (this.#closing) throw new ClosedError('transport is closed');
    try {
      return await this.#groups.stats(this.names.consumer(group));
    } catch (err) {
      throw toBusError(err, 'groupStats');
    }
  }

  /**
   * Purges the dead letters of ephemeral groups whose consumer is gone (their process died); run
   * every `ephemeralSweepIntervalMs`. Resolves with the number of groups purged.
   */
  async sweep(): Promise<number> {
    if (this.#closing) throw new ClosedError('transport is closed');
    try {
      return await this.#groups.sweep();
    } catch (err) {
      throw toBusError(err, 'sweep');
    }
  }

  /**
   * The group's durable pull consumer: created at the first subscribe (deliver new: the group
   * receives what is published from then on), its filter the pattern. A group has one pattern on
   * NATS 2.9 (one filter subject per consumer).
   */
  async #declareConsumer(
    name: string,
    group: string,
    pattern: string,
    options: TransportSubscribeOptions,
  ): Promise<void> {
    const jsm = this.#jsm as JetStreamManager;
    const filter = this.names.subject(pattern);
    try {
      const info = await jsm.consumers.info(this.names.stream, name);
      if (!info.config.durable_name) {
        throw new ConfigError(`group ${group} is ephemeral`, { path: 'subscribe.ephemeral' });
      }
      if (info.config.filter_subject && info.config.filter_subject !== filter) {
        throw new ConfigError(
          `group ${group} is bound to ${this.names.topicOf(info.config.filter_subject)}; on NATS a group has one pattern`,
          { path: 'subscribe.group' },
        );
      }
      // A consumer declared by an earlier version stopped after maxAttempts + 1 deliveries:
      // delivering without limit now (see below), so that a failed dead-lettering is retried.
      if (info.config.max_deliver !== undefined && info.config.max_deliver !== -1) {
        await jsm.consumers.update(this.names.stream, name, { max_deliver: -1 });
      }
      return;
    } catch (err) {
      if (err instanceof ConfigError) throw err;
    }
    try {
      await jsm.consumers.add(this.names.stream, {
        durable_name: name,
        description: group,
        filter_subject: filter,
        ack_policy: AckPolicy.Explicit,
        ack_wait: nanos(options.ackTimeoutMs),
        deliver_policy: DeliverPolicy.New,
        // No limit: the bus dead-letters the attempt past maxAttempts. With JetStream's own limit
        // (it was maxAttempts + 1) a dead-lettering that failed then (the DLQ stream unreachable
        // for a moment) got no further delivery, and the message was lost to the group.
        max_deliver: -1,
        max_ack_pending: -1,
        max_waiting: 4096,
      });
    } catch (err) {
      // Created by another subscriber meanwhile: fine if it is there now.
      await jsm.consumers.info(this.names.stream, name).catch(() => {
        throw toBusError(err, 'subscribe');
      });
    }
  }

  async health(deep = false): Promise<HealthReport> {
    const details: Record<string, unknown> = {
      connected: this.#nc !== undefined && !this.#nc.isClosed(),
      server: this.#nc?.getServer(),
      subscriptions: this.#subs.size,
    };
    if (this.#closing) return { status: 'fail', transport: this.name, details, error: 'transport is closed' };
    if (!deep) return { status: this.#nc ? 'pass' : 'warn', transport: this.name, details };
    const t0 = performance.now();
    try {
      await this.#ready();
      const nc = this.#nc as NatsConnection;
      // A round trip to the server, then one through JetStream (the stream's state).
      details.rttMs = await nc.rtt();
      const info = await (this.#jsm as JetStreamManager).streams.info(this.names.stream);
      details.messages = info.state.messages;
      details.consumers = info.state.consumer_count;
      return { status: 'pass', transport: this.name, latencyMs: performance.now() - t0, details };
    } catch (err) {
      return {
        status: 'fail',
        transport: this.name,
        latencyMs: performance.now() - t0,
        details,
        error: (err as Error).message,
      };
    }
  }

  close(): Promise<void> {
    this.#closing ??= (async () => {
      clearInterval(this.#sweepTimer);
      await Promise.allSettled([...this.#subs].map((s) => s.close()));
      await this.#connecting?.catch(() => {});
      const nc = this.#nc;
      this.#nc = undefined;
      this.#acks?.close();
      if (nc) await nc.drain().catch(() => nc.close());
    })();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** Creates a NATS JetStream transport (not connected yet: it connects on first use or `connect()`). */
export function natsTransport(options: NatsTransportOptions = {}): NatsTransport {
  return new NatsTransport(options);
}
