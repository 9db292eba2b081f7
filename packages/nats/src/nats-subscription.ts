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
import type { Msg, MsgHdrs, NatsConnection, Subscription as NatsSub } from '@nats-io/transport-node';
import { H, type NatsNames } from './names.js';

/** What a subscription needs of its transport. */
export interface SubscriptionContext {
  readonly names: NatsNames;
  readonly clock: Clock;
  connection(): NatsConnection;
  /** Stores a dead letter; resolves once JetStream acknowledged it. */
  deadLetter(group: string, msg: Msg, topic: string, fields: Record<string, string>): Promise<void>;
  /** Keeps a nack's error for the redelivery (never rejects). */
  recordLastError(consumer: string, streamSeq: number, delivered: number, error: string): Promise<void>;
  /** The error recorded by the nack of delivery `delivered - 1`, or undefined (never rejects). */
  lastErrorOf(consumer: string, streamSeq: number, delivered: number): Promise<string | undefined>;
  /** The server says the group's consumer is gone: declare it again. */
  consumerLost(sub: NatsSubscription): Promise<void>;
}

/**
 * How long one pull request waits at the server before it expires (an idle subscription asks
 * again). Short, because a request whose subscription went away still waits at the server until
 * then, and nats-server 2.9 rolls a message's delivery count back by one when it meets such a
 * request: close waits this long before it hands its messages back.
 */
const PULL_EXPIRES_MS = 1_000;
/** The ack payload, encoded once. */
const ACK = new TextEncoder().encode('+ACK');

interface AckInfo {
  /** JetStream's delivery count of this message for the consumer (1 on the first delivery). */
  readonly delivered: number;
  /** The message's sequence in the stream (0: unknown). */
  readonly streamSeq: number;
  readonly timestampMs: number;
}

/** The fields of a JetStream ack subject (`$JS.ACK.…`): v1 or v2 (domain, account hash) layout. */
function ackInfo(reply: string): AckInfo | undefined {
  const t = reply.split('.');
  if (t[0] !== '$JS' || t[1] !== 'ACK') return undefined;
  const base = t.length >= 12 ? 6 : 4; // v2: $JS.ACK.<domain>.<hash>.<stream>.<consumer>.<delivered>…
  const delivered = Number(t[base]);
  const streamSeq = Number(t[base + 1]);
  const tsNs = t[base + 3];
  return {
    delivered: Number.isFinite(delivered) ? delivered : 1,
    streamSeq: Number.isSafeInteger(streamSeq) && streamSeq > 0 ? streamSeq : 0,
    timestampMs: tsNs ? Number(BigInt(tsNs) / 1_000_000n) : 0,
  };
}

function header(h: MsgHdrs | undefined, name: string): string | undefined {
  if (!h?.has(name)) return undefined;
  return h.get(name);
}

function numberHeader(h: MsgHdrs | undefined, name: string): number | undefined {
  const v = header(h, name);
  if (v === undefined || v === '') return undefined;
  const n = Number(v);
  return Number.isFinite(n) ? n : undefined;
}

/** The user's headers (carried as one JSON header, so any key and value survives). */
export function userHeaders(h: MsgHdrs | undefined): Record<string, string> {
  const json = header(h, H.headers);
  if (!json) return {};
  try {
    const v = JSON.parse(json) as unknown;
    return v !== null && typeof v === 'object' ? (v as Record<string, string>) : {};
  } catch {
    return {}; // a foreign or damaged message: no headers
  }
}

/**
 * One subscription: pulls from the group's durable consumer with its own pull requests, so that
 * it never holds more than `prefetch` unsettled messages (requested credits included). An idle
 * subscription keeps one request waiting at the server, so a new message arrives at once.
 * JetStream keeps the lease (ack wait) and redelivers what is not acked in time; this side mirrors
 * it, so that a settle after the lease ran out does nothing, and renews the leases of messages
 * buffered but not yet handed out.
 *
 * lastError: a message in the stream cannot change and `-NAK` redelivers that same message, so a
 * nack with an error first records it in the stream `AB_<ns>_ERR` (subject per group and stream
 * sequence, with the delivery count it ended), then naks. A redelivery (delivery count > 1) looks
 * its record up before it is buffered and shows it only when it was written by the delivery just
 * before (so a lease that ran out in between leaves none). This holds across processes. Without
 * a record (the write failed or its TTL passed, the lookup failed) the redelivery has no lastError.
 */
export class NatsSubscription extends PushSubscription {
  readonly #ctx: SubscriptionContext;
  /** Received, not handed out yet: higher priority first among them (JetStream has no priority order). */
  readonly #buffer = new PriorityBuffer();
  readonly #handedOut = new Set<ManagedDelivery>();
  readonly #pending = new Set<Promise<void>>();
  readonly #timer: NodeJS.Timeout;
  readonly #inbox: string;
  #sub: NatsSub | undefined;
  /** Messages asked for and not yet received. */
  #credits = 0;
  /** Received and not settled (buffered or handed out). */
  #held = 0;
  /** When the last pull request sent expires at the server. */
  #requestsEndAt = 0;
  /** When the inbox last heard from the server (a message or a status). */
  #heardAt = Date.now();
  readonly #watchdog: NodeJS.Timeout;
  /** Redeliveries received whose last error is being looked up (their leases are renewed meanwhile). */
  readonly #lookingUp = new Map<Promise<void>, Msg>();

  constructor(
    ctx: SubscriptionContext,
    readonly group: string,
    readonly consumer: string,
    readonly prefetch: number,
    readonly ackTimeoutMs: number,
    /**
     * The group is ephemeral (see NatsGroups): a pull request is kept waiting even while the
     * subscription holds `prefetch` messages (the consumer's max_ack_pending holds it back), so
     * the server never sees it inactive; on close nothing is handed back (the consumer goes).
     */
    readonly ephemeral = false,
  ) {
    super();
    this.#ctx = ctx;
    const nc = ctx.connection();
    this.#inbox = `_INBOX.ab.${nc.info?.client_id ?? 0}.${Math.random().toString(36).slice(2)}`;
    this.#sub = nc.subscribe(this.#inbox, { callback: (err, msg) => this.#onMessage(err, msg) });
    this.#timer = setInterval(() => this.#tick(), Math.max(10, Math.floor(ackTimeoutMs / 4)));
    this.#timer.unref();
    // Every pull request ends with messages or a status within PULL_EXPIRES_MS; silence for longer
    // while requests are out means they were lost (a reconnect the client did not report, a
    // server restart): ask again.
    this.#watchdog = setInterval(() => {
      if (this.#credits > 0 && Date.now() - this.#heardAt > 3 * PULL_EXPIRES_MS) {
        this.#credits = 0;
        this.#heardAt = Date.now();
        this.#pump();
      }
    }, PULL_EXPIRES_MS);
    this.#watchdog.unref();
    this.#pump();
  }

  /** After a reconnect: the server forgot our pull requests. */
  resume(): void {
    this.#credits = 0;
    this.#pump();
  }

  /** Asks for as many messages as there is room for (in batches of at least half the room). */
  #pump(): void {
    if (this.closed) return;
    let free = this.prefetch - this.#held - this.#credits;
    if (free <= 0) {
      if (!this.ephemeral || this.#credits > 0) return;
      free = 1; // the keep-alive of an ephemeral group's consumer
    } else if (this.#credits > 0 && free < Math.ceil(this.prefetch / 2)) return;
    const req = JSON.stringify({ batch: free, expires: PULL_EXPIRES_MS * 1_000_000 });
    try {
      this.#ctx
        .connection()
        .publish(`$JS.API.CONSUMER.MSG.NEXT.${this.#ctx.names.stream}.${this.consumer}`, req, { reply: this.#inbox });
      this.#credits += free;
      this.#requestsEndAt = Date.now() + PULL_EXPIRES_MS;
    } catch {
      // disconnected: resume() asks again after the reconnect
    }
  }

  #onMessage(err: Error | null, msg: Msg): void {
    if (err || this.closed) return;
    this.#heardAt = Date.now();
    const code = msg.headers?.code ?? 0;
    if (code !== 0 && !msg.reply) {
      // A status: 100 heartbeat; 404/408 the request ended (no messages / expired) with this many
      // left unfilled; 409 the server cut it short (max waiting, consumer deleted …).
      if (code >= 400) {
        const left = numberHeader(msg.headers, 'Nats-Pending-Messages');
        this.#credits = left === undefined ? 0 : Math.max(0, this.#credits - left);
        if (code === 409 || code === 503) {
          // 503: nobody answers yet (JetStream still starting): ask again shortly. 409 with the
          // consumer deleted: declare it again (a server that lost its store, an operator).
          const lost = code === 409 && /consumer deleted|not found/i.test(msg.headers?.description ?? '');
          setTimeout(() => {
            if (!lost) return this.#pump();
            this.#ctx.consumerLost(this).then(
              () => this.#pump(),
              () => setTimeout(() => this.#pump(), 1_000).unref(),
            );
          }, 250).unref();
        } else this.#pump();
      }
      return;
    }
    if (!msg.reply) return;
    this.#credits = Math.max(0, this.#credits - 1);
    this.#held++;
    // An ephemeral group's consumer must keep seeing pull requests, also while this one is full.
    if (this.ephemeral && this.#credits === 0) this.#pump();
    const info = ackInfo(msg.reply);
    if (info && info.delivered > 1 && info.streamSeq > 0) {
      const lookup = this.#ctx
        .lastErrorOf(this.consumer, info.streamSeq, info.delivered)
        .then((lastError) => this.#receive(msg, info, lastError))
        .catch(() => {}); // not buffered: JetStream redelivers it after the ack wait
      this.#lookingUp.set(lookup, msg);
      void lookup.finally(() => this.#lookingUp.delete(lookup));
      return;
    }
    this.#receive(msg, info, undefined);
  }

  /** Buffers a received message (still after close: close hands the buffer back). */
  #receive(msg: Msg, info: AckInfo | undefined, lastError: string | undefined): void {
    const d = this.#delivery(msg, info, lastError);
    if (d === undefined) {
      // Acked unseen (a replay for another group): it holds no room any more.
      this.#held = Math.max(0, this.#held - 1);
      this.#pump();
      return;
    }
    const exp = d.message.expiresAtMs;
    if (exp !== undefined && exp <= this.#ctx.clock.now()) {
      this.#track(d.deadLetter('expired', { error: `expired at ${new Date(exp).toISOString()}` }));
      return;
    }
    this.#buffer.push(d);
    this.wakeReader();
  }

  #delivery(msg: Msg, info: AckInfo | undefined, lastError: string | undefined): ManagedDelivery | undefined {
    const h = msg.headers;
    const only = header(h, H.onlyGroup);
    const lease = new NatsLease(this.#ctx, this, msg, this.#ctx.names.topicOf(msg.subject));
    lease.delivered = info?.delivered ?? 1;
    lease.streamSeq = info?.streamSeq ?? 0;
    if (only !== undefined && only !== this.group) {
      // A replay meant for another group: not ours to see.
      lease.ack();
      return undefined;
    }
    const attempt = (numberHeader(h, H.attempts) ?? 0) + (info?.delivered ?? 1);
    lease.attempt = attempt;
    const p = numberHeader(h, H.priority);
    const message: InboundMessage = {
      id: header(h, H.id) ?? header(h, 'Nats-Msg-Id') ?? '',
      topic: lease.topic,
      body: msg.data,
      headers: userHeaders(h),
      priority: p === undefined ? 4 : Math.max(0, Math.min(MAX_PRIORITY, Math.trunc(p))),
      expiresAtMs: numberHeader(h, H.expiresAt),
      publishedAtMs: numberHeader(h, H.publishedAt) ?? info?.timestampMs ?? this.#ctx.clock.now(),
    };
    lease.deadline = this.#ctx.clock.now() + this.ackTimeoutMs;
    lease.publishedAtMs = message.publishedAtMs;
    const d = new ManagedDelivery(message, this.group, attempt, lease, lastError);
    d.onSettled = (x) => {
      this.#handedOut.delete(x);
      this.#held = Math.max(0, this.#held - 1);
      this.#pump();
    };
    return d;
  }

  /** Renews buffered leases; lets handed-out leases that ran out go (JetStream redelivers them). */
  #tick(): void {
    const now = this.#ctx.clock.now();
    for (const d of this.#buffer) {
      if (!d.settled) (d.lease as NatsLease).extend(this.ackTimeoutMs);
    }
    for (const msg of this.#lookingUp.values()) {
      try {
        this.#ctx.connection().publish(msg.reply as string, '+WPI');
      } catch {
        // disconnected: the server redelivers after the ack wait
      }
    }
    for (const d of [...this.#handedOut]) {
      if ((d.lease as NatsLease).deadline <= now) d.abandon();
    }
  }

  #track(p: Promise<void>): Promise<void> {
    const tracked = p.catch(() => {});
    this.#pending.add(tracked);
    void tracked.then(() => this.#pending.delete(tracked));
    return p;
  }

  track(p: Promise<void>): Promise<void> {
    return this.#track(p);
  }

  poll(): ManagedDelivery | undefined {
    if (this.closed) return undefined;
    for (let d = this.#buffer.shift(); d; d = this.#buffer.shift()) {
      if (d.settled) continue;
      const lease = d.lease as NatsLease;
      lease.deadline = this.#ctx.clock.now() + this.ackTimeoutMs;
      this.#handedOut.add(d);
      return d;
    }
    return undefined;
  }

  protected async doClose(): Promise<void> {
    clearInterval(this.#timer);
    clearInterval(this.#watchdog);
    // Stop our pull requests first (no interest left on the inbox), so that what goes back is not
    // delivered to a request of ours that nobody reads any more.
    this.#sub?.unsubscribe();
    this.#sub = undefined;
    try {
      await this.#ctx.connection().flush();
    } catch {
      // disconnected
    }
    // Redeliveries still being looked up land in the buffer, and go back with it.
    await Promise.allSettled([...this.#lookingUp.keys()]);
    if (this.ephemeral) {
      // Its consumer is deleted next: nothing to give back.
      for (let d = this.#buffer.shift(); d; d = this.#buffer.shift()) d.abandon();
      for (const d of [...this.#handedOut]) d.abandon();
      await Promise.allSettled([...this.#pending]);
      return;
    }
    // Taken back from the consumer now (its settles do nothing from here on)...
    const held: NatsLease[] = [];
    for (let d = this.#buffer.shift(); d; d = this.#buffer.shift()) {
      if (d.settled) continue;
      d.abandon();
      held.push(d.lease as NatsLease);
    }
    const now = this.#ctx.clock.now();
    for (const d of [...this.#handedOut]) {
      d.abandon();
      // One whose lease ran out may be with another consumer already: not ours to give back.
      if ((d.lease as NatsLease).deadline > now) held.push(d.lease as NatsLease);
    }
    // ...kept while our last pull request may still wait at the server...
    const wait = this.#requestsEndAt + 50 - Date.now();
    if (wait > 0 && held.length > 0) {
      const keep = setInterval(() => {
        for (const l of held) l.renewForClose();
      }, 100);
      for (const l of held) l.renewForClose();
      await new Promise((r) => setTimeout(r, wait));
      clearInterval(keep);
    }
    // ...then back to the group (JetStream counts a delivery for each, seen or not).
    for (const l of held) l.nakForClose();
    await Promise.allSettled([...this.#pending]);
    try {
      await this.#ctx.connection().flush();
    } catch {
      // disconnected: the server redelivers after the ack wait
    }
  }
}

/** One delivery's lease: acks go to its reply subject while the lease is held. */
export class NatsLease implements LeaseOps {
  /** When the lease runs out here (JetStream's ack wait, renewed by extend). */
  deadline = Number.POSITIVE_INFINITY;
  /** The delivery's attempt and first publish time (recorded with a dead letter). */
  attempt = 1;
  publishedAtMs = 0;
  /** JetStream's delivery count and the stream sequence: where a nack's error is recorded. */
  delivered = 1;
  streamSeq = 0;

  constructor(
    private readonly ctx: SubscriptionContext,
    private readonly sub: NatsSubscription,
    private readonly msg: Msg,
    readonly topic: string,
  ) {}

  #send(payload: string | Uint8Array): void {
    if (this.ctx.clock.now() > this.deadline) return; // lost: JetStream redelivers (or did) elsewhere
    try {
      this.ctx.connection().publish(this.msg.reply as string, payload);
    } catch {
      // disconnected: the server redelivers after the ack wait
    }
  }

  ack(): void {
    this.#send(ACK);
  }

  nack({ delayMs = 0, error }: NackOptions): void | Promise<void> {
    if (!error || this.streamSeq === 0) return this.nak(delayMs);
    if (this.ctx.clock.now() > this.deadline) return; // lost: JetStream redelivers (or did) elsewhere
    // Recorded before the -NAK, so that a redelivery at once (to any process) finds it.
    return this.sub.track(
      this.ctx.recordLastError(this.sub.consumer, this.streamSeq, this.delivered, error).then(() => this.nak(delayMs)),
    );
  }

  nak(delayMs: number): void {
    this.#send(delayMs > 0 ? `-NAK ${JSON.stringify({ delay: Math.ceil(delayMs) * 1_000_000 })}` : '-NAK');
  }

  deadLetter(reason: string, { error }: DeadLetterOptions): Promise<void> {
    return this.sub.track(
      (async () => {
        if (this.ctx.clock.now() > this.deadline) return;
        await this.ctx.deadLetter(this.sub.group, this.msg, this.topic, {
          [H.dlReason]: reason,
          [H.dlError]: error ?? '',
          [H.dlAt]: String(this.ctx.clock.now()),
          [H.dlAttempts]: String(this.attempt),
          [H.publishedAt]: String(this.publishedAtMs),
          [H.dlGroup]: this.sub.group,
          ...(this.sub.ephemeral ? { [H.dlEphemeral]: '1' } : {}),
        });
        this.ack();
      })(),
    );
  }

  /** Renewal while the subscription closes (the delivery is already taken back from its consumer). */
  renewForClose(): void {
    this.#publish('+WPI');
  }

  nakForClose(): void {
    this.#publish('-NAK');
  }

  #publish(payload: string): void {
    try {
      this.ctx.connection().publish(this.msg.reply as string, payload);
    } catch {
      // disconnected: the server redelivers after the ack wait
    }
  }

  extend(ms: number): void {
    if (this.ctx.clock.now() > this.deadline) return;
    this.deadline = this.ctx.clock.now() + ms;
    this.#send('+WPI');
  }
}

/**
 * The deliveries a subscription holds ahead of its consumer, handed out highest priority first
 * (FIFO within a priority): the emulation of priority on JetStream, exact only among what was
 * already fetched (up to `prefetch`).
 */
class PriorityBuffer {
  readonly #levels: Fifo<ManagedDelivery>[] = Array.from({ length: MAX_PRIORITY + 1 }, () => new Fifo());
  #size = 0;

  get size(): number {
    return this.#size;
  }

  push(d: ManagedDelivery): void {
    (this.#levels[d.message.priority] as Fifo<ManagedDelivery>).push(d);
    this.#size++;
  }

  shift(): ManagedDelivery | undefined {
    if (this.#size === 0) return undefined;
    for (let p = MAX_PRIORITY; p >= 0; p--) {
      const d = (this.#levels[p] as Fifo<ManagedDelivery>).shift();
      if (d) {
        this.#size--;
        return d;
      }
    }
    return undefined;
  }

  *[Symbol.iterator](): Iterator<ManagedDelivery> {
    for (const level of this.#levels) yield* level;
  }
}
