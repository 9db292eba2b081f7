import { randomUUID } from 'node:crypto';
import {
  type Clock,
  type DeadLetterOptions,
  Fifo,
  type InboundMessage,
  type LeaseOps,
  MAX_PRIORITY,
  ManagedDelivery,
  type NackOptions,
  PushSubscription,
} from '@agentbus/core';
import type { Channel, ConsumeMessage, Options } from 'amqplib';
import { Acker } from './acker.js';
import { copyOptions, H, numberHeader, stringHeader, userHeaders } from './headers.js';
import type { AmqpNames } from './names.js';
import type { AmqpQueueType } from './options.js';

/** What a subscription needs of its transport. */
export interface SubscriptionContext {
  readonly names: AmqpNames;
  readonly queueType: AmqpQueueType;
  readonly clock: Clock;
  /** Publishes a copy to a queue through the default exchange; resolves on the broker's confirm. */
  sendToQueue(queue: string, body: Buffer, options: Options.Publish): Promise<void>;
  /** The retry queue of the ladder step that `delayMs` rounds up to (declared on first use). */
  retryQueue(group: string, delayMs: number): Promise<string>;
  /** A new channel on the current connection; rejects with ConnectionError while it is down. */
  createChannel(): Promise<Channel>;
  /** The consumer's channel went away while the subscription is open: start it again later. */
  channelLost(sub: AmqpSubscription): void;
}

/** A consumer channel; settles of deliveries that came on it only act while it lives. */
interface LiveChannel {
  readonly ch: Channel;
  readonly acker: Acker;
  alive: boolean;
  tag?: string;
}

/**
 * One subscription: a consumer on the group's queue, on a channel of its own with `prefetch`
 * (basic.qos), whose deliveries are buffered until the bus takes them. AMQP has no lease: the
 * broker keeps an unacked message with its consumer until the channel closes. So the lease is
 * kept here: a handed-out delivery not settled or extended within the ack timeout is put back
 * for another consumer (a copy with attempt + 1, then the original acked), and its later settle
 * does nothing.
 */
export class AmqpSubscription extends PushSubscription {
  readonly #ctx: SubscriptionContext;
  readonly #buffer = new Fifo<ManagedDelivery>();
  readonly #handedOut = new Set<ManagedDelivery>();
  readonly #pending = new Set<Promise<void>>();
  readonly #leaseTimer: NodeJS.Timeout;
  #channel: LiveChannel | undefined;

  constructor(
    ctx: SubscriptionContext,
    readonly queue: string,
    readonly group: string,
    readonly prefetch: number,
    readonly ackTimeoutMs: number,
  ) {
    super();
    this.#ctx = ctx;
    this.#leaseTimer = setInterval(() => this.#expireLeases(), Math.max(10, Math.floor(ackTimeoutMs / 4)));
    this.#leaseTimer.unref();
  }

  /** Deliveries the broker gave this consumer that are not settled yet (buffered or handed out). */
  get unsettled(): number {
    let n = this.#handedOut.size;
    for (const d of this.#buffer) if (!d.settled) n++;
    return n;
  }

  /** Whether a consumer is running on a live channel. */
  get consuming(): boolean {
    return this.#channel?.alive === true;
  }

  /** Starts consuming on the current connection (again after a reconnect). */
  async start(): Promise<void> {
    if (this.closed || this.consuming) return;
    const ch = await this.#ctx.createChannel();
    const live: LiveChannel = { ch, alive: true, acker: new Acker(ch, () => live.alive) };
    ch.on('error', () => {}); // the close that follows is what counts
    ch.on('close', () => this.#lost(live));
    try {
      await ch.prefetch(this.prefetch);
      const { consumerTag } = await ch.consume(this.queue, (msg) => this.#onMessage(live, msg), { noAck: false });
      live.tag = consumerTag;
    } catch (err) {
      live.alive = false;
      await ch.close().catch(() => {});
      throw err;
    }
    if (this.closed) {
      live.alive = false;
      await ch.close().catch(() => {});
      return;
    }
    this.#channel = live;
  }

  /** The channel closed (connection lost, broker closed it): what came on it is the broker's again. */
  #lost(live: LiveChannel): void {
    live.alive = false;
    if (this.#channel !== live) return;
    this.#channel = undefined;
    for (let d = this.#buffer.shift(); d; d = this.#buffer.shift()) d.abandon();
    for (const d of [...this.#handedOut]) d.abandon();
    this.#handedOut.clear();
    if (!this.closed) this.#ctx.channelLost(this);
  }

  #onMessage(live: LiveChannel, msg: ConsumeMessage | null): void {
    if (msg === null) {
      // The broker cancelled the consumer (queue deleted): close the channel and start again later.
      void live.ch.close().catch(() => {});
      return;
    }
    if (this.closed || !live.alive) return; // left unacked: the broker redelivers it
    const d = this.#delivery(live, msg);
    const exp = d.message.expiresAtMs;
    if (exp !== undefined && exp <= this.#ctx.clock.now()) {
      // Never delivered once expired: straight to the group's dead letters.
      this.#track(d.deadLetter('expired', { error: `expired at ${new Date(exp).toISOString()}` }));
      return;
    }
    this.#buffer.push(d);
    this.wakeReader();
  }

  #delivery(live: LiveChannel, msg: ConsumeMessage): ManagedDelivery {
    const h = msg.properties.headers as Record<string, unknown> | undefined;
    const made = numberHeader(h, H.attempts) ?? 0;
    // Returns counted by the broker: quorum queues count them; classic ones only flag a redelivery.
    const returned =
      this.#ctx.queueType === 'quorum' ? (numberHeader(h, 'x-delivery-count') ?? 0) : msg.fields.redelivered ? 1 : 0;
    const attempt = made + returned + 1;
    // The error of the nack that made this copy precedes its first delivery only: a copy the
    // broker returns (a consumer's channel closed while holding it) ended without an error.
    const lastError = returned === 0 ? stringHeader(h, H.lastError) : undefined;
    const rawPriority = msg.properties.priority;
    const priority = typeof rawPriority === 'number' ? Math.max(0, Math.min(MAX_PRIORITY, Math.trunc(rawPriority))) : 4;
    const timestamp = msg.properties.timestamp;
    const message: InboundMessage = {
      id: typeof msg.properties.messageId === 'string' ? msg.properties.messageId : '',
      topic: stringHeader(h, H.topic) ?? msg.fields.routingKey,
      body: msg.content,
      headers: userHeaders(h),
      priority,
      expiresAtMs: numberHeader(h, H.expiresAt),
      publishedAtMs:
        numberHeader(h, H.publishedAt) ?? (typeof timestamp === 'number' ? timestamp * 1000 : this.#ctx.clock.now()),
    };
    return new ManagedDelivery(
      message,
      this.group,
      attempt,
      new AmqpLease(this.#ctx, this, live, msg, attempt),
      lastError,
    );
  }

  /** Keeps a settle in flight visible to close(), which waits for it before closing the channel. */
  #track(p: Promise<void>): Promise<void> {
    const tracked = p.catch(() => {});
    this.#pending.add(tracked);
    void tracked.then(() => this.#pending.delete(tracked));
    return p;
  }

  track(p: Promise<void>): Promise<void> {
    return this.#track(p);
  }

  #handOut(d: ManagedDelivery): ManagedDelivery {
    (d.lease as AmqpLease).deadline = this.#ctx.clock.now() + this.ackTimeoutMs;
    this.#handedOut.add(d);
    d.onSettled = (x) => this.#handedOut.delete(x);
    return d;
  }

  #expireLeases(): void {
    if (this.#handedOut.size === 0) return;
    const now = this.#ctx.clock.now();
    for (const d of [...this.#handedOut]) {
      const lease = d.lease as AmqpLease;
      if (lease.deadline > now) continue;
      // Lost: the consumer's later settle does nothing; another consumer gets it, attempt + 1,
      // without a last error.
      d.abandon();
      this.#track(lease.requeue(d.attempt, undefined));
    }
  }

  poll(): ManagedDelivery | undefined {
    if (this.closed) return undefined;
    for (let d = this.#buffer.shift(); d; d = this.#buffer.shift()) {
      if (!d.settled) return this.#handOut(d);
    }
    return undefined;
  }

  protected async doClose(): Promise<void> {
    clearInterval(this.#leaseTimer);
    const live = this.#channel;
    live?.acker.flush();
    if (live?.alive && live.tag) await live.ch.cancel(live.tag).catch(() => {});
    // Put back what this consumer holds, as copies with the right attempt (the broker's own
    // requeue would count a return even for a delivery the consumer never saw).
    const releases: Promise<void>[] = [];
    for (let d = this.#buffer.shift(); d; d = this.#buffer.shift()) {
      if (d.settled) continue;
      d.abandon();
      // Never seen: not an attempt, and the next delivery keeps the last error this one carried.
      releases.push((d.lease as AmqpLease).requeue(d.attempt - 1, d.lastError));
    }
    for (const d of [...this.#handedOut]) {
      d.abandon();
      releases.push((d.lease as AmqpLease).requeue(d.attempt, undefined));
    }
    await Promise.allSettled([...releases, ...this.#pending]);
    live?.acker.flush();
    this.#channel = undefined;
    if (live?.alive) {
      live.alive = false;
      await live.ch.close().catch(() => {});
    }
  }
}

/** The broker side of one delivery: acks on the channel it came on; other settles move a copy. */
export class AmqpLease implements LeaseOps {
  /** When the lease runs out (set when handed out, pushed by extend). */
  deadline = Number.POSITIVE_INFINITY;

  constructor(
    private readonly ctx: SubscriptionContext,
    private readonly sub: AmqpSubscription,
    private readonly live: LiveChannel,
    private readonly msg: ConsumeMessage,
    private readonly attempt: number,
  ) {}

  ack(): void {
    // Gone with its channel: the broker redelivers it. Otherwise batched per event-loop turn.
    if (this.live.alive) this.live.acker.ack(this.msg.fields.deliveryTag);
  }

  nack({ delayMs = 0, error }: NackOptions): Promise<void> {
    return this.sub.track(
      (async () => {
        const queue =
          delayMs > 0 ? await this.ctx.retryQueue(this.sub.group, delayMs) : this.ctx.names.queue(this.sub.group);
        // The copy carries the error to its next delivery (no error: the header is removed).
        await this.#move(queue, { [H.attempts]: String(this.attempt), [H.lastError]: error || undefined });
      })(),
    );
  }

  deadLetter(reason: string, { error }: DeadLetterOptions): Promise<void> {
    return this.sub.track(
      this.#move(this.ctx.names.deadLetterQueue(this.sub.group), {
        [H.attempts]: undefined,
        // The record's error is the final one; the previous attempt's is not kept beside it.
        [H.lastError]: undefined,
        [H.dlId]: randomUUID(),
        [H.dlReason]: reason,
        [H.dlError]: error ?? '',
        [H.dlAttempts]: String(this.attempt),
        [H.dlAt]: String(this.ctx.clock.now()),
        [H.dlGroup]: this.sub.group,
      }),
    );
  }

  extend(ms: number): void {
    this.deadline = this.ctx.clock.now() + ms;
  }

  /** Back into the group's queue as a copy whose next delivery is attempt `made + 1` with `lastError`. */
  requeue(made: number, lastError: string | undefined): Promise<void> {
    return this.#move(this.ctx.names.queue(this.sub.group), {
      [H.attempts]: String(Math.max(0, made)),
      [H.lastError]: lastError || undefined,
    });
  }

  /**
   * Publishes a copy to `queue` and, once the broker confirmed it, acks the original: a crash in
   * between leaves both (at least once), never neither. Should the copy be refused, the original
   * goes back to its queue instead, so it is not stuck with this consumer.
   */
  async #move(queue: string, extra: Readonly<Record<string, string | undefined>>): Promise<void> {
    if (!this.live.alive) return;
    const h = this.msg.properties.headers as Record<string, unknown> | undefined;
    // A copy goes straight to a queue, so its routing key is no longer the topic: it carries it.
    const topic = stringHeader(h, H.topic) ?? this.msg.fields.routingKey;
    try {
      await this.ctx.sendToQueue(
        queue,
        this.msg.content,
        copyOptions(this.msg.properties, { [H.topic]: topic, ...extra }),
      );
    } catch (err) {
      if (this.live.alive) {
        try {
          this.live.ch.nack(this.msg, false, true);
          this.live.acker.settledElsewhere(this.msg.fields.deliveryTag);
        } catch {
          // channel gone: the broker redelivers it
        }
      }
      throw err;
    }
    this.ack();
  }
}
