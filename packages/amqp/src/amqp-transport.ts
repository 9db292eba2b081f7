import {
  assertSubscribeOptions,
  assertTransportBatch,
  ClosedError,
  ConfigError,
  ConnectionError,
  type GroupStats,
  type HealthReport,
  type ManagedDelivery,
  RateLimitedError,
  type Subscription,
  TimeoutError,
  type Transport,
  type TransportCapabilities,
  type TransportMessage,
  type TransportSubscribeOptions,
} from '@agentbus/core';
import amqp, { type Channel, type ChannelModel, type ConfirmChannel, type Options } from 'amqplib';
import { AmqpDeadLetterStore } from './amqp-dead-letter-store.js';
import { toBusError } from './amqp-errors.js';
import { AmqpGroups } from './amqp-groups.js';
import { AmqpSubscription } from './amqp-subscription.js';
import { publishOptions } from './headers.js';
import { AmqpNames, bindingKey } from './names.js';
import { type AmqpTransportOptions, type ResolvedAmqpOptions, resolveAmqpOptions } from './options.js';

/** The recovering connection amqplib returns with `recovery` set. */
type RecoveringModel = Awaited<ReturnType<typeof amqp.connect>> & {
  waitForConnect(): Promise<unknown>;
  on(event: 'connect', listener: (model: ChannelModel) => void): unknown;
  on(event: 'disconnect', listener: (err: Error) => void): unknown;
  on(event: string, listener: (...args: unknown[]) => void): unknown;
};

/** How long a subscription whose channel the broker closed waits before consuming again. */
const RESTART_DELAY_MS = 200;

/** Settles the promise of one publish batch once the broker confirmed every message of it. */
function confirmBatch(timeoutMs: number, send: (cb: (err: unknown) => void) => number) {
  return new Promise<void>((resolve, reject) => {
    let left = 0;
    let done = false;
    const timer = setTimeout(() => {
      finish(new TimeoutError(`the broker did not confirm the publish within ${timeoutMs} ms`));
    }, timeoutMs);
    const finish = (err?: unknown) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (err === undefined) resolve();
      else reject(err);
    };
    const cb = (err: unknown) => {
      if (err) {
        // A nack: the broker refused it (a full queue with overflow reject-publish), or the
        // channel closed before the confirm came (lost connection).
        const text = err instanceof Error ? err.message : String(err);
        finish(
          /closed/i.test(text)
            ? new ConnectionError(`amqp publish not confirmed: ${text}`, { cause: err })
            : new RateLimitedError(`the broker refused the publish (a queue is full?): ${text}`, { cause: err }),
        );
      } else if (--left === 0) finish();
    };
    try {
      left = send(cb);
      if (left === 0) finish();
    } catch (err) {
      finish(toBusError(err, 'publish'));
    }
  });
}

/**
 * RabbitMQ through amqplib: a durable topic exchange per namespace, a durable queue per group
 * (quorum by default) bound with the group's patterns, publisher confirms, manual acks with
 * prefetch, retries through a ladder of TTL queues, a dead-letter queue per group; ephemeral
 * groups on exclusive queues. It has `groupStats` but no `routeCount`: AMQP cannot list an
 * exchange's bindings (request-reply then cannot fail fast with NoRespondersError). See the
 * README's RabbitMQ section.
 */
export class AmqpTransport implements Transport {
  readonly name = 'amqp';
  readonly capabilities: TransportCapabilities;
  readonly names: AmqpNames;
  readonly deadLetters: AmqpDeadLetterStore;
  readonly #options: ResolvedAmqpOptions;
  readonly #subs = new Map<AmqpSubscription, { readonly patterns: Set<string>; readonly ephemeral: boolean }>();
  readonly #groups: AmqpGroups;
  /** The ephemeral groups of this connection's subscriptions, with the retry queues declared for each. */
  readonly #ephemeral = new Map<string, Set<string>>();
  #model: RecoveringModel | undefined;
  #conn: ChannelModel | undefined;
  #connecting: Promise<ChannelModel> | undefined;
  /** Connected at least once: from then on, a lost connection opens the circuit. */
  #everConnected = false;
  #pub: Promise<ConfirmChannel> | undefined;
  /** Retry queues declared on the current connection. */
  #retryQueues = new Map<string, Promise<string>>();
  #closing: Promise<void> | undefined;
  #restartTimer: NodeJS.Timeout | undefined;

  constructor(options: AmqpTransportOptions = {}) {
    this.#options = resolveAmqpOptions(options);
    this.names = new AmqpNames(this.#options.namespace);
    this.capabilities = Object.freeze({
      persistent: true,
      crossProcess: true,
      priority: this.#options.queueType === 'classic' && this.#options.maxPriority > 0,
      delayedDelivery: true,
      ttl: true,
      wildcards: true,
      deadLetterReplay: true,
    });
    this.#groups = new AmqpGroups({
      names: this.names,
      options: this.#options,
      createChannel: () => this.#createChannel(),
    });
    this.deadLetters = new AmqpDeadLetterStore({
      names: this.names,
      createChannel: () => this.#createChannel(),
      sendToQueue: (q, body, o) => this.#sendToQueue(q, body, o),
    });
  }

  get closed(): boolean {
    return this.#closing !== undefined;
  }

  /** Whether the connection is up (the circuit is closed). */
  get connected(): boolean {
    return this.#conn !== undefined;
  }

  async connect(): Promise<void> {
    await this.#connection();
  }

  /**
   * The current connection. Before the first connection this waits for it (failing with
   * ConnectionError when the broker cannot be reached); after it, while the connection is lost,
   * it fails at once (the circuit is open) while amqplib reconnects in the background.
   */
  #connection(): Promise<ChannelModel> {
    if (this.#closing) return Promise.reject(new ClosedError('transport is closed'));
    if (this.#conn) return Promise.resolve(this.#conn);
    if (this.#everConnected && this.#model) {
      return Promise.reject(
        new ConnectionError('RabbitMQ is unreachable; reconnecting (publishes fail fast meanwhile)'),
      );
    }
    this.#connecting ??= this.#open().finally(() => {
      this.#connecting = undefined;
    });
    return this.#connecting;
  }

  async #open(): Promise<ChannelModel> {
    const o = this.#options;
    const url = new URL(o.url);
    url.searchParams.set('heartbeat', String(o.heartbeatS));
    let model: RecoveringModel;
    try {
      model = (await amqp.connect(url.toString(), {
        // Small frames (acks, single publishes) go out at once: Nagle would hold them back for
        // tens of ms at low load.
        noDelay: true,
        recovery: {
          initialDelay: o.reconnect.initialMs,
          maxDelay: o.reconnect.maxMs,
          factor: 2,
          jitter: 0.5,
          maxRetries: Number.POSITIVE_INFINITY,
          // The first connection fails fast; once connected, reconnecting never gives up.
          initialMaxRetries: 0,
          waitForConnect: false,
        },
      })) as unknown as RecoveringModel;
    } catch (err) {
      throw toBusError(err, 'connect');
    }
    model.on('error', () => {});
    model.on('connect', (conn: ChannelModel) => this.#onConnect(conn));
    model.on('disconnect', () => this.#onDisconnect());
    this.#model = model;
    try {
      await model.waitForConnect();
    } catch (err) {
      this.#model = undefined;
      await (model.close() as Promise<void>).catch(() => {});
      throw toBusError(err, 'connect');
    }
    if (this.#closing) {
      await (model.close() as Promise<void>).catch(() => {});
      throw new ClosedError('transport is closed');
    }
    const conn = this.#conn;
    if (!conn) throw new ConnectionError('RabbitMQ connection lost right after it opened');
    return conn;
  }

  #onConnect(conn: ChannelModel): void {
    conn.on('error', () => {});
    this.#conn = conn;
    this.#retryQueues = new Map();
    this.#pub = undefined;
    if (!this.#everConnected) {
      this.#everConnected = true;
      return;
    }
    // Reconnected: declare every subscription's topology again (the broker may have lost
    // non-durable state) and consume again.
    this.#scheduleRestart(0);
  }

  #onDisconnect(): void {
    this.#conn = undefined;
    this.#pub = undefined;
    this.#retryQueues = new Map();
  }

  /** A channel on the current connection. */
  async #createChannel(): Promise<Channel> {
    const conn = await this.#connection();
    try {
      const ch = await conn.createChannel();
      ch.on('error', () => {});
      return ch;
    } catch (err) {
      throw toBusError(err, 'channel');
    }
  }

  /** The confirm channel publishes go through (one per connection, made again if it closes). */
  #publishChannel(): Promise<ConfirmChannel> {
    if (this.#pub) return this.#pub;
    const opening = (async () => {
      const conn = await this.#connection();
      const ch = await conn.createConfirmChannel();
      ch.on('error', () => {});
      ch.on('close', () => {
        if (this.#pub === opening) this.#pub = undefined;
      });
      return ch;
    })();
    this.#pub = opening;
    opening.catch(() => {
      if (this.#pub === opening) this.#pub = undefined;
    });
    return opening;
  }

  async publish(batch: readonly TransportMessage[]): Promise<void> {
    assertTransportBatch(batch);
    if (this.#closing) throw new ClosedError('transport is closed');
    if (batch.length === 0) return;
    let ch: ConfirmChannel;
    try {
      ch = await this.#publishChannel();
    } catch (err) {
      throw toBusError(err, 'publish');
    }
    const exchange = this.names.exchange;
    const now = this.#options.clock.now();
    await confirmBatch(this.#options.confirmTimeoutMs, (cb) => {
      for (const m of batch) {
        const body = Buffer.isBuffer(m.body)
          ? m.body
          : Buffer.from(m.body.buffer, m.body.byteOffset, m.body.byteLength);
        ch.publish(exchange, m.topic, body, publishOptions(m, now), cb);
      }
      return batch.length;
    });
  }

  /** Publishes a copy straight to a queue (default exchange) and waits for its confirm. */
  async #sendToQueue(queue: string, body: Buffer, options: Options.Publish): Promise<void> {
    let ch: ConfirmChannel;
    try {
      ch = await this.#publishChannel();
    } catch (err) {
      throw toBusError(err, 'publish');
    }
    await confirmBatch(this.#options.confirmTimeoutMs, (cb) => {
      ch.sendToQueue(queue, body, options, cb);
      return 1;
    });
  }

  /** The arguments of a group's queues for the configured queue type. */
  #queueArgs(): Record<string, unknown> {
    return this.#options.queueType === 'quorum'
      ? { 'x-queue-type': 'quorum', 'x-dead-letter-strategy': 'at-least-once', 'x-overflow': 'reject-publish' }
      : { 'x-queue-type': 'classic' };
  }

  /**
   * Declares (idempotently) the exchange, the group's dead-letter exchange and queue, its queue
   * and the binding of `pattern`; registers the group the first time its queue is created.
   */
  async #declare(group: string, pattern: string): Promise<void> {
    const n = this.names;
    const queue = n.queue(group);
    const isNew = !(await this.#queueExists(queue));
    const ch = await this.#createChannel();
    try {
      await ch.assertExchange(n.exchange, 'topic', { durable: true });
      await ch.assertExchange(n.deadLetterExchange(group), 'fanout', { durable: true });
      await ch.assertQueue(n.deadLetterQueue(group), { durable: true, arguments: this.#queueArgs() });
      await ch.bindQueue(n.deadLetterQueue(group), n.deadLetterExchange(group), '');
      const args: Record<string, unknown> = {
        ...this.#queueArgs(),
        'x-dead-letter-exchange': n.deadLetterExchange(group),
      };
      if (this.#options.queueType === 'classic') {
        if (this.#options.maxPriority > 0) args['x-max-priority'] = this.#options.maxPriority;
        if (this.#options.maxQueueLength !== undefined) args['x-overflow'] = 'reject-publish';
      }
      if (this.#options.maxQueueLength !== undefined) args['x-max-length'] = this.#options.maxQueueLength;
      try {
        await ch.assertQueue(queue, { durable: true, arguments: args });
      } catch (err) {
        throw new ConfigError(
          `queue ${queue} exists with other arguments (another queueType or maxQueueLength?): ${(err as Error).message}`,
          { path: 'queueType', cause: err },
        );
      }
      await ch.bindQueue(queue, n.exchange, bindingKey(pattern));
      if (isNew) {
        await ch.assertQueue(n.registry, { durable: true });
      }
    } catch (err) {
      throw toBusError(err, 'declare');
    } finally {
      await ch.close().catch(() => {});
    }
    if (isNew) await this.#sendToQueue(n.registry, Buffer.from(group, 'utf8'), { persistent: true });
  }

  async #queueExists(queue: string): Promise<boolean> {
    const ch = await this.#createChannel();
    try {
      await ch.checkQueue(queue);
      return true;
    } catch {
      return false; // 404 closes the channel
    } finally {
      await ch.close().catch(() => {});
    }
  }

  /** The retry queue `delayMs` rounds up to: a TTL queue dead-lettering back into the group's queue. */
  #retryQueue(group: string, delayMs: number): Promise<string> {
    const ladder = this.#options.retryLadderMs;
    const step = ladder.find((ms) => ms >= delayMs) ?? (ladder[ladder.length - 1] as number);
    const name = this.names.retry(group, step);
    let declared = this.#retryQueues.get(name);
    if (!declared) {
      const ephemeral = this.#ephemeral.get(group);
      ephemeral?.add(name);
      declared = (async () => {
        const ch = await this.#createChannel();
        try {
          await ch.assertQueue(
            name,
            ephemeral
              ? this.#groups.retryQueueOptions(group, step)
              : {
                  durable: true,
                  arguments: {
                    ...this.#queueArgs(),
                    'x-message-ttl': step,
                    'x-dead-letter-exchange': '',
                    'x-dead-letter-routing-key': this.names.queue(group),
                  },
                },
          );
        } catch (err) {
          throw toBusError(err, 'declare retry queue');
        } finally {
          await ch.close().catch(() => {});
        }
        return name;
      })();
      declared.catch(() => this.#retryQueues.delete(name));
      this.#retryQueues.set(name, declared);
    }
    return declared;
  }

  /**
   * Declares the group's queue (durably, see #declare) and consumes it. With `ephemeral`, the
   * group's queues are exclusive to this connection (see AmqpGroups): deleted when the
   * subscription closes, and by the broker when the connection goes. A group is either durable or
   * ephemeral, and an ephemeral one has one subscriber: otherwise ConfigError.
   */
  async subscribe(pattern: string, options: TransportSubscribeOptions): Promise<Subscription<ManagedDelivery>> {
    if (this.#closing) throw new ClosedError('transport is closed');
    // basic.qos takes a 16-bit count.
    assertSubscribeOptions(pattern, options, 65_535);
    const { group } = options;
    const ephemeral = options.ephemeral === true;
    if (this.#ephemeral.has(group)) {
      throw new ConfigError(`ephemeral group ${group} already has a subscriber`, { path: 'subscribe.group' });
    }
    if (ephemeral) {
      this.#ephemeral.set(group, new Set());
      try {
        await this.#groups.declareEphemeral(group, pattern);
      } catch (err) {
        this.#ephemeral.delete(group);
        throw err;
      }
    } else {
      await this.#declare(group, pattern);
    }
    const sub = new AmqpSubscription(
      {
        names: this.names,
        queueType: this.#options.queueType,
        clock: this.#options.clock,
        sendToQueue: (q, body, o) => this.#sendToQueue(q, body, o),
        retryQueue: (g, ms) => this.#retryQueue(g, ms),
        createChannel: () => this.#createChannel(),
        channelLost: () => this.#scheduleRestart(RESTART_DELAY_MS),
      },
      this.names.queue(options.group),
      options.group,
      options.prefetch,
      options.ackTimeoutMs,
    );
    this.#subs.set(sub, { patterns: new Set([pattern]), ephemeral });
    const close = sub.close.bind(sub);
    let closing: Promise<void> | undefined;
    sub.close = () => {
      closing ??= (async () => {
        this.#subs.delete(sub);
        await close();
        if (!ephemeral) return;
        const retryQueues = this.#ephemeral.get(group) ?? [];
        this.#ephemeral.delete(group);
        // Not deleted (connection down, transport closing): the broker deletes exclusive queues
        // with their connection.
        await this.#groups.removeEphemeral(group, retryQueues).catch(() => {});
      })();
      return closing;
    };
    try {
      await sub.start();
    } catch (err) {
      await sub.close();
      throw toBusError(err, 'subscribe');
    }
    return sub;
  }

  /** Starts again every subscription that is not consuming, once connected; retries until it works. */
  #scheduleRestart(delayMs: number): void {
    if (this.#closing || this.#restartTimer) return;
    this.#restartTimer = setTimeout(() => {
      this.#restartTimer = undefined;
      void this.#restartAll();
    }, delayMs);
    this.#restartTimer.unref();
  }

  async #restartAll(): Promise<void> {
    if (this.#closing || !this.#conn) return; // the next connect schedules it again
    let failed = false;
    for (const [sub, { patterns, ephemeral }] of this.#subs) {
      if (sub.closed || sub.consuming) continue;
      try {
        // An ephemeral group's queues went with the old connection: declared again, empty.
        for (const p of patterns) {
          if (ephemeral) await this.#groups.declareEphemeral(sub.group, p);
          else await this.#declare(sub.group, p);
        }
        await sub.start();
      } catch {
        failed = true;
      }
    }
    if (failed) this.#scheduleRestart(this.#options.reconnect.maxMs);
  }

  /**
   * backlog = ready messages in the group's queue and its retry queues (the broker's count, as
   * `queue.declare` passive reports it); inFlight = deliveries this transport's own consumers of
   * the group hold unsettled (buffered or handed out). AMQP cannot tell how many other
   * connections' consumers hold: their unacked messages count in neither. Zeros for an unknown
   * group; a BusError for another connection's ephemeral group. (There is no routeCount: AMQP
   * has no binding query, and RabbitMQ's HTTP API is not assumed.)
   */
  async groupStats(group: string): Promise<GroupStats> {
    if (this.#closing) throw new ClosedError('transport is closed');
    const backlog = await this.#groups.readyCount(group);
    let inFlight = 0;
    for (const sub of this.#subs.keys()) if (sub.group === group) inFlight += sub.unsettled;
    return { backlog, inFlight };
  }

  async health(deep = false): Promise<HealthReport> {
    const details: Record<string, unknown> = {
      connected: this.connected,
      queueType: this.#options.queueType,
      subscriptions: this.#subs.size,
      consuming: [...this.#subs.keys()].filter((s) => s.consuming).length,
    };
    if (this.#closing) return { status: 'fail', transport: this.name, details, error: 'transport is closed' };
    if (!deep) {
      if (this.connected) return { status: 'pass', transport: this.name, details };
      return {
        status: this.#everConnected ? 'fail' : 'warn',
        transport: this.name,
        details,
        ...(this.#everConnected ? { error: 'RabbitMQ connection lost; reconnecting' } : {}),
      };
    }
    const t0 = performance.now();
    let ch: Channel | undefined;
    try {
      ch = await this.#createChannel();
      // A publish/consume round trip through a private queue that goes away with the channel.
      const { queue } = await ch.assertQueue('', { exclusive: true, autoDelete: true, durable: false });
      ch.sendToQueue(queue, Buffer.from('ping'));
      for (let i = 0; ; i++) {
        if ((await ch.get(queue, { noAck: true })) !== false) break;
        if (i > 200) throw new TimeoutError('health round trip: message did not come back');
        await new Promise((r) => setTimeout(r, 5));
      }
      return { status: 'pass', transport: this.name, latencyMs: performance.now() - t0, details };
    } catch (err) {
      return {
        status: 'fail',
        transport: this.name,
        latencyMs: performance.now() - t0,
        details,
        error: (err as Error).message,
      };
    } finally {
      await ch?.close().catch(() => {});
    }
  }

  close(): Promise<void> {
    this.#closing ??= (async () => {
      clearTimeout(this.#restartTimer);
      await Promise.allSettled([...this.#subs.keys()].map((s) => s.close()));
      await this.#connecting?.catch(() => {});
      const pub = this.#pub;
      this.#pub = undefined;
      if (pub) await pub.then((ch) => ch.close()).catch(() => {});
      const model = this.#model;
      this.#model = undefined;
      this.#conn = undefined;
      if (model) await (model.close() as Promise<void>).catch(() => {});
    })();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** Creates a RabbitMQ transport (not connected yet: it connects on first use or `connect()`). */
export function amqpTransport(options: AmqpTransportOptions = {}): AmqpTransport {
  return new AmqpTransport(options);
}
