import { Agent, type AgentCardInput, AgentDirectory, type AgentOptions } from './agent.js';
import { closeAgents } from './agent-runtime.js';
import { BACKOFF_DEFAULTS, type BackoffOptions, backoffDelayMs, validateBackoff } from './backoff.js';
import { type Clock, type IdGenerator, systemClock, uuidv7Ids } from './clock.js';
import { type Codec, jsonCodec } from './codec.js';
import { Delivery } from './delivery.js';
import {
  assertPattern,
  createEnvelope,
  DEFAULT_PRIORITY,
  type Envelope,
  expiresAtMs,
  type PublishOptions,
} from './envelope.js';
import { BusError, ClosedError, ConfigError, describeError, isRetryable, PayloadTooLargeError } from './errors.js';
import { type Logger, stderrLogger } from './logger.js';
import { SETTLED_SYNC } from './managed-delivery.js';
import {
  type ConsumeContext,
  compose,
  HANDLED_SYNC,
  type Middleware,
  type PublishContext,
  type SubscribeContext,
  type SubscriptionInfo,
} from './middleware.js';
import { type ReplyOptions, type RequestOptions, RequestReply } from './request-reply.js';
import type { RawDelivery, Subscription, Transport, TransportMessage } from './transport.js';

export interface BusOptions {
  readonly transport: Transport;
  /** Default: JSON (CloudEvents structured mode). */
  readonly codec?: Codec;
  readonly middleware?: readonly Middleware[];
  readonly clock?: Clock;
  readonly ids?: IdGenerator;
  readonly logger?: Logger;
  /** `source` of published envelopes unless given per publish. */
  readonly source?: string;
  /** Encoded envelopes larger than this are refused with PayloadTooLargeError. */
  readonly maxPayloadBytes?: number;
  /** Whether `bus.close()` also closes the transport. */
  readonly ownsTransport?: boolean;
}

export const BUS_DEFAULTS = Object.freeze({
  source: 'agentbus',
  maxPayloadBytes: 1024 * 1024,
  ownsTransport: true,
});

export interface SubscribeOptions {
  /**
   * Consumer group. Subscribers of one group compete; every group gets its own copy. Default:
   * the pattern itself, so subscribers of the same pattern compete and different patterns never
   * share a queue.
   */
  readonly group?: string;
  /** Handlers running at once on this subscription. */
  readonly concurrency?: number;
  /** Deliveries leased ahead of the handlers (default: `concurrency`). */
  readonly prefetch?: number;
  /** After this many failed attempts the message is dead-lettered (`max-attempts`). */
  readonly maxAttempts?: number;
  /** Lease length; the bus renews it every third of it while the handler runs. */
  readonly ackTimeoutMs?: number;
  readonly backoff?: Partial<BackoffOptions>;
  /**
   * A group that lives only as long as this subscription (a private inbox): not durable, removed
   * with what it holds when the subscription closes. Default false.
   */
  readonly ephemeral?: boolean;
}

export const SUBSCRIBE_DEFAULTS = Object.freeze({
  concurrency: 1,
  maxAttempts: 5,
  ackTimeoutMs: 30_000,
  backoff: BACKOFF_DEFAULTS,
});

export type Handler<T = unknown> = (delivery: Delivery<T>) => unknown | Promise<unknown>;

export interface PublishItem<T = unknown> {
  readonly topic: string;
  readonly data: T;
  readonly options?: PublishOptions;
}

/** A running handler subscription. `close()` stops taking work and waits for running handlers. */
export interface BusSubscription extends AsyncDisposable {
  readonly pattern: string;
  readonly group: string;
  /** Handlers running right now. */
  readonly inFlight: number;
  close(): Promise<void>;
}

type ConsumeHook = (ctx: ConsumeContext, next: () => Promise<void>) => Promise<void>;

/** Dead-letter reasons the bus writes. */
export const DeadLetterReason = Object.freeze({
  maxAttempts: 'max-attempts',
  decode: 'decode',
  expired: 'expired',
  unrecoverable: 'unrecoverable',
});

function positiveInt(value: number, path: string): number {
  if (!Number.isInteger(value) || value < 1)
    throw new ConfigError(`must be a positive integer, got ${value}`, { path });
  return value;
}

/** Why a non-retryable error dead-letters a message. */
function reasonFor(err: unknown): string {
  if (err instanceof BusError)
    return err.code === 'UNRECOVERABLE' ? DeadLetterReason.unrecoverable : err.code.toLowerCase().replaceAll('_', '-');
  return DeadLetterReason.unrecoverable;
}

/** Deliveries the subscriptions of this process handle in a row before they let the event loop run timers and I/O. */
const YIELD_EVERY = 512;

let turnsSinceYield = 0;
let yielding: Promise<void> | undefined;

/**
 * Counts a delivery turn; every YIELD_EVERY turns (over all subscriptions of the process) returns
 * a promise that settles after the event loop ran timers and I/O, the same one for every
 * subscription until then. They pause together: had each its own count, one would sit out a
 * turn of the event loop holding the deliveries it had leased while the others went hundreds of
 * messages ahead, which makes an ordered consumer (sequencing) hold each workflow's later
 * messages for those it stranded.
 */
function turnTaken(): Promise<void> | undefined {
  if (yielding !== undefined) return yielding;
  if (++turnsSinceYield < YIELD_EVERY) return undefined;
  turnsSinceYield = 0;
  yielding = new Promise<void>((resolve) =>
    setImmediate(() => {
      yielding = undefined;
      resolve();
    }),
  );
  return yielding;
}

/** What HandlerSubscription's #handle returns while the delivery's handler is still running. */
const PENDING = 'pending';
const noop = (): void => {};

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return (
    value !== null &&
    (typeof value === 'object' || typeof value === 'function') &&
    typeof (value as { then?: unknown }).then === 'function'
  );
}

/** The bus: publish, subscribe with handlers, middleware, graceful close. */
export class Bus {
  readonly transport: Transport;
  readonly codec: Codec;
  readonly clock: Clock;
  readonly ids: IdGenerator;
  readonly logger: Logger;
  readonly #source: string;
  readonly #maxPayloadBytes: number;
  readonly #ownsTransport: boolean;
  readonly #middleware: Middleware[] = [];
  readonly #subscriptions = new Set<HandlerSubscription>();
  #publishHooks: ((ctx: PublishContext, next: () => Promise<void>) => Promise<void>)[] = [];
  #publishChain!: (ctx: PublishContext) => Promise<void>;
  #consumeHooks: ConsumeHook[] = [];
  #subscribeHooks: ((ctx: SubscribeContext) => void | Promise<void>)[] = [];
  #closing: Promise<void> | undefined;
  #requestReply: RequestReply | undefined;

  constructor(options: BusOptions) {
    if (!options || typeof options.transport?.publish !== 'function') {
      throw new ConfigError('a Transport is required', { path: 'transport' });
    }
    this.transport = options.transport;
    this.codec = options.codec ?? jsonCodec();
    this.clock = options.clock ?? systemClock;
    this.ids = options.ids ?? uuidv7Ids;
    this.logger = options.logger ?? stderrLogger;
    this.#source = options.source ?? BUS_DEFAULTS.source;
    this.#maxPayloadBytes = positiveInt(options.maxPayloadBytes ?? BUS_DEFAULTS.maxPayloadBytes, 'maxPayloadBytes');
    this.#ownsTransport = options.ownsTransport ?? BUS_DEFAULTS.ownsTransport;
    for (const m of options.middleware ?? []) this.use(m);
    this.#rebuild();
  }

  get closed(): boolean {
    return this.#closing !== undefined;
  }

  /** Adds middleware; hooks run in the order added (outermost first). */
  use(middleware: Middleware): this {
    if (!middleware || typeof middleware.name !== 'string')
      throw new ConfigError('middleware needs a name', { path: 'middleware' });
    this.#middleware.push(middleware);
    this.#rebuild();
    return this;
  }

  #rebuild(): void {
    this.#publishHooks = this.#middleware.flatMap((m) => (m.publish ? [m.publish.bind(m)] : []));
    this.#publishChain = compose(this.#publishHooks, async (ctx) => {
      await this.transport.publish([this.#encode(ctx.envelope)]);
    });
    this.#consumeHooks = this.#middleware.flatMap((m) => (m.consume ? [m.consume.bind(m)] : []));
    this.#subscribeHooks = this.#middleware.flatMap((m) => (m.subscribe ? [m.subscribe.bind(m)] : []));
  }

  /** Builds an envelope without publishing it. */
  envelope<T>(topic: string, data: T, options: PublishOptions = {}): Envelope<T> {
    return createEnvelope(topic, data, options, { id: this.ids(), source: this.#source, nowMs: this.clock.now() });
  }

  /** Publishes one event; resolves with the envelope once the transport made it durable. */
  async publish<T>(topic: string, data: T, options: PublishOptions = {}): Promise<Envelope<T>> {
    this.#assertOpen();
    const ctx: PublishContext = { envelope: this.envelope(topic, data, options) };
    if (this.#publishHooks.length === 0) await this.transport.publish([this.#encode(ctx.envelope)]);
    else await this.#publishChain(ctx);
    return ctx.envelope as Envelope<T>;
  }

  /**
   * Publishes several events in one transport round. Every envelope passes the publish
   * middleware first; if any is refused, none is sent and the call rejects.
   */
  async publishBatch(items: readonly PublishItem[]): Promise<Envelope[]> {
    this.#assertOpen();
    if (this.#publishHooks.length === 0) {
      const envelopes = items.map((it) => this.envelope(it.topic, it.data, it.options ?? {}));
      await this.transport.publish(this.#encodeMany(envelopes));
      return envelopes;
    }
    const contexts = items.map(
      (it, i) => new BatchPublishContext(this.envelope(it.topic, it.data, it.options ?? {}), i),
    );
    // What reached the terminal, encoded together once every chain has arrived (one slab).
    const outbound: (Envelope | undefined)[] = new Array(contexts.length);
    const failures: unknown[] = [];
    let settle!: (err?: unknown) => void;
    const sent = new Promise<void>((resolve, reject) => {
      settle = (err) => (err === undefined ? resolve() : reject(err));
    });
    sent.catch(() => {});
    // Resolves once every chain has reached the transport, been dropped by middleware, or failed.
    let waiting = contexts.length;
    let allArrived!: () => void;
    const arrivals = new Promise<void>((resolve) => {
      allArrived = resolve;
    });
    const arrived = new Uint8Array(contexts.length);
    const arrive = (i: number) => {
      if (arrived[i] === 1) return;
      arrived[i] = 1;
      if (--waiting === 0) allArrived();
    };
    if (waiting === 0) allArrived();
    const run = compose<PublishContext>(this.#publishHooks, (c) => {
      const i = BatchPublishContext.indexOf(c);
      outbound[i] = c.envelope;
      arrive(i);
      return sent;
    });
    const chains: Promise<void>[] = [];
    let asSent = false;
    for (let i = 0; i < contexts.length; i++) {
      const chain = run(contexts[i] as BatchPublishContext);
      // A chain whose hooks handed the terminal's promise back as it is (synchronous hooks) has
      // arrived and ends as the transport publish does: `sent` stands for all such chains.
      if (chain === sent) {
        if (!asSent) chains.push(sent);
        asSent = true;
        continue;
      }
      chains.push(
        chain.then(
          () => arrive(i),
          (err: unknown) => {
            if (!outbound[i]) failures.push(err);
            arrive(i);
            throw err;
          },
        ),
      );
    }
    await arrivals;
    if (failures.length > 0) {
      settle(failures[0]);
      await Promise.allSettled(chains);
      throw failures[0];
    }
    try {
      await this.transport.publish(this.#encodeMany(outbound.filter((e): e is Envelope => e !== undefined)));
      settle();
    } catch (err) {
      settle(err);
    }
    await Promise.all(chains);
    return contexts.map((c) => c.envelope);
  }

  #encodeMany(envelopes: readonly Envelope[]): TransportMessage[] {
    if (this.codec.encodeMany === undefined || envelopes.length < 2) return envelopes.map((e) => this.#encode(e));
    const bodies = this.codec.encodeMany(envelopes);
    return envelopes.map((e, i) => this.#message(e, bodies[i] as Uint8Array));
  }

  #encode(env: Envelope): TransportMessage {
    return this.#message(env, this.codec.encode(env));
  }

  #message(env: Envelope, body: Uint8Array): TransportMessage {
    if (body.byteLength > this.#maxPayloadBytes) {
      throw new PayloadTooLargeError(
        `encoded envelope is ${body.byteLength} bytes, over maxPayloadBytes ${this.#maxPayloadBytes}`,
        { data: { bytes: body.byteLength, maxPayloadBytes: this.#maxPayloadBytes } },
      );
    }
    const headers: Record<string, string> = { 'content-type': this.codec.contentType, 'ce-type': env.type };
    if (env.traceparent) headers.traceparent = env.traceparent;
    return {
      id: env.id,
      topic: env.topic,
      body,
      headers,
      priority: env.priority ?? DEFAULT_PRIORITY,
      expiresAtMs: expiresAtMs(env),
    };
  }

  /** Runs `handler` for every message matching `pattern` in `options.group`. */
  async subscribe<T = unknown>(
    pattern: string,
    handler: Handler<T>,
    options: SubscribeOptions = {},
  ): Promise<BusSubscription> {
    this.#assertOpen();
    assertPattern(pattern);
    if (typeof handler !== 'function') throw new ConfigError('a handler function is required', { path: 'handler' });
    const concurrency = positiveInt(options.concurrency ?? SUBSCRIBE_DEFAULTS.concurrency, 'subscribe.concurrency');
    const prefetch = positiveInt(options.prefetch ?? concurrency, 'subscribe.prefetch');
    const settings: HandlerSettings = {
      pattern,
      group: options.group ?? pattern,
      concurrency,
      prefetch,
      maxAttempts: positiveInt(options.maxAttempts ?? SUBSCRIBE_DEFAULTS.maxAttempts, 'subscribe.maxAttempts'),
      ackTimeoutMs: positiveInt(options.ackTimeoutMs ?? SUBSCRIBE_DEFAULTS.ackTimeoutMs, 'subscribe.ackTimeoutMs'),
      backoff: { ...SUBSCRIBE_DEFAULTS.backoff, ...options.backoff },
      handler: handler as Handler,
    };
    if (!settings.group) throw new ConfigError('must be a non-empty string', { path: 'subscribe.group' });
    validateBackoff(settings.backoff, 'subscribe.backoff');
    if (this.#subscribeHooks.length > 0) {
      // Middleware may refuse the subscription (authorization): it is then never made.
      const ctx: SubscribeContext = { pattern, group: settings.group };
      for (const hook of this.#subscribeHooks) await hook(ctx);
    }
    const raw = await this.transport.subscribe(pattern, {
      group: settings.group,
      prefetch,
      ackTimeoutMs: settings.ackTimeoutMs,
      maxAttempts: settings.maxAttempts,
      ...(options.ephemeral ? { ephemeral: true } : {}),
    });
    if (this.#closing) {
      // The bus closed while the transport was subscribing: give the subscription back.
      await raw.close();
      throw new ClosedError('bus is closed');
    }
    const sub = new HandlerSubscription(
      this,
      raw,
      settings,
      () => this.#consumeHooks,
      () => this.#subscriptions.delete(sub),
    );
    this.#subscriptions.add(sub);
    return sub;
  }

  get #rr(): RequestReply {
    this.#requestReply ??= new RequestReply(this);
    return this.#requestReply;
  }

  /**
   * Sends `data` to `topic` and resolves with the reply (see {@link RequestReply}): TimeoutError
   * after `timeoutMs`, NoRespondersError at once where the transport can tell nobody subscribes,
   * a replier's error rebuilt as the same class, the signal's reason when aborted.
   */
  request<R = unknown, T = unknown>(topic: string, data: T, options?: RequestOptions): Promise<R> {
    this.#assertOpen();
    return this.#rr.request<R, T>(topic, data, options);
  }

  /** Answers requests on `pattern` with the handler's result (or error). */
  reply<T = unknown, R = unknown>(
    pattern: string,
    handler: (d: Delivery<T>) => R | Promise<R>,
    options?: ReplyOptions,
  ): Promise<BusSubscription> {
    this.#assertOpen();
    return this.#rr.reply<T, R>(pattern, handler, options);
  }

  /** Replies that arrived after their request had timed out or been cancelled (dropped). */
  get lateReplies(): number {
    return this.#requestReply?.lateReplies ?? 0;
  }

  /**
   * An agent on this bus with an inbox, workspace broadcast and presence (see {@link Agent});
   * `card` may be just the agent's id. Nothing happens on the bus until it is used or started.
   */
  agent(card: AgentCardInput | string, options?: AgentOptions): Agent {
    this.#assertOpen();
    return new Agent(this, card, options);
  }

  /** Who is alive in the workspace (see {@link AgentDirectory}); made on first use, closed with the bus. */
  get agents(): AgentDirectory {
    return AgentDirectory.of(this);
  }

  /** Stops every subscription, waits for running handlers to settle, then closes the transport (if owned). Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      await closeAgents(this); // called before #closing is set: running agents can still announce they go offline
      await this.#requestReply?.close();
      await Promise.all([...this.#subscriptions].map((s) => s.close()));
      if (this.#ownsTransport) await this.transport.close();
    })();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #assertOpen(): void {
    if (this.#closing) throw new ClosedError('bus is closed');
  }
}

/** The publish context of one envelope of a batch; its place in the batch is private (hooks see `envelope`). */
class BatchPublishContext implements PublishContext {
  readonly #index: number;
  constructor(
    public envelope: Envelope,
    index: number,
  ) {
    this.#index = index;
  }
  static indexOf(ctx: PublishContext): number {
    return (ctx as BatchPublishContext).#index;
  }
}

/** Where a running handler's delivery is kept for lease renewal: a slot index, or -1 when parked or over the slots. */
interface Running {
  slot: number;
  readonly raw: RawDelivery;
}

class DeliveryContext implements ConsumeContext {
  #state: Map<string, unknown> | undefined;
  constructor(
    readonly delivery: Delivery,
    readonly subscription: HandlerSettings,
    private readonly sub: HandlerSubscription,
    private readonly running: Running,
  ) {}
  /** The delivery's envelope: the one delivered, or what a hook gave `delivery.useEnvelope`. */
  get envelope(): Envelope {
    return this.delivery.envelope;
  }
  get pattern(): string {
    return this.subscription.pattern;
  }
  get group(): string {
    return this.subscription.group;
  }
  get state(): Map<string, unknown> {
    this.#state ??= new Map();
    return this.#state;
  }
  wait<T>(promise: Promise<T>): Promise<T> {
    return this.sub.park(this.running, promise);
  }
}

interface HandlerSettings extends SubscriptionInfo {
  readonly pattern: string;
  readonly group: string;
  readonly concurrency: number;
  readonly prefetch: number;
  readonly maxAttempts: number;
  readonly ackTimeoutMs: number;
  readonly backoff: BackoffOptions;
  readonly handler: Handler;
}

class HandlerSubscription implements BusSubscription {
  readonly pattern: string;
  readonly group: string;
  readonly done: Promise<void>;
  #inFlight = 0;
  #stopping = false;
  #closing: Promise<void> | undefined;
  #idle: (() => void) | undefined;
  /**
   * Settles issued and not yet confirmed by the transport. A handler's concurrency slot is free
   * once its settle is issued (as with an AMQP or JetStream ack); close waits for these.
   */
  readonly #settling = new Set<Promise<void>>();
  /**
   * Deliveries whose handler is running, one slot per unit of concurrency; their leases are
   * renewed. Fixed slots rather than a Set: no hashing or rehashing per message.
   */
  readonly #slots: (RawDelivery | undefined)[];
  readonly #freeSlots: number[];
  /** Running deliveries without a slot: parked by `ctx.wait`, or back from it when every slot was taken. */
  readonly #unslotted = new Set<RawDelivery>();
  /** Deliveries waiting in `ctx.wait`; they end with ClosedError when the subscription closes. */
  readonly #parked = new Set<(err: Error) => void>();
  readonly #renewer: NodeJS.Timeout;
  #chain: { readonly hooks: readonly ConsumeHook[]; readonly run: (ctx: ConsumeContext) => Promise<void> } | undefined;
  #slotFreed: (() => void) | undefined;

  constructor(
    private readonly bus: Bus,
    private readonly raw: Subscription<RawDelivery>,
    private readonly settings: HandlerSettings,
    private readonly hooks: () => readonly ConsumeHook[],
    private readonly onClosed: () => void,
  ) {
    this.pattern = settings.pattern;
    this.group = settings.group;
    this.#slots = new Array(settings.concurrency).fill(undefined);
    this.#freeSlots = Array.from({ length: settings.concurrency }, (_, i) => settings.concurrency - 1 - i);
    // Keep the leases of running handlers: a model call may take minutes. One timer per
    // subscription renews them all every third of the ack timeout.
    const every = Math.max(1, Math.floor(settings.ackTimeoutMs / 3));
    this.#renewer = setInterval(() => this.#renew(), every);
    this.#renewer.unref();
    this.done = this.#loop().then(() => {
      // The loop ended by itself (transport closed, fatal error): release everything as close does.
      if (!this.#stopping) void this.close();
    });
  }

  #renew(): void {
    for (const raw of this.#slots) if (raw !== undefined) this.#extend(raw);
    for (const raw of this.#unslotted) this.#extend(raw);
  }

  #extend(raw: RawDelivery): void {
    raw.extend(this.settings.ackTimeoutMs).catch((err: unknown) => {
      this.bus.logger.warn({ err, messageId: raw.message.id, group: this.group }, 'lease extension failed');
    });
  }

  /** `ctx.wait`: gives the slot up while `promise` is pending, keeps renewing the lease. */
  async park<T>(running: Running, promise: Promise<T>): Promise<T> {
    if (this.#stopping) throw new ClosedError('subscription is closing');
    this.#release(running);
    this.#unslotted.add(running.raw);
    this.#inFlight--;
    this.#wake();
    let abort!: (err: Error) => void;
    const closed = new Promise<never>((_, reject) => {
      abort = reject;
    });
    closed.catch(() => {});
    this.#parked.add(abort);
    try {
      return await Promise.race([promise, closed]);
    } finally {
      this.#parked.delete(abort);
      this.#inFlight++;
      const slot = this.#freeSlots.pop();
      if (slot !== undefined) {
        this.#unslotted.delete(running.raw);
        this.#slots[slot] = running.raw;
        running.slot = slot;
      }
    }
  }

  #release(running: Running): void {
    if (running.slot >= 0) {
      this.#slots[running.slot] = undefined;
      this.#freeSlots.push(running.slot);
      running.slot = -1;
    } else this.#unslotted.delete(running.raw);
  }

  #wake(): void {
    const f = this.#slotFreed;
    this.#slotFreed = undefined;
    f?.();
    if (this.#inFlight === 0 && this.#parked.size === 0) this.#idle?.();
  }

  get inFlight(): number {
    return this.#inFlight;
  }

  async #loop(): Promise<void> {
    const raw = this.raw;
    const it = raw[Symbol.asyncIterator]();
    let failures = 0;
    while (!this.#stopping) {
      if (this.#inFlight >= this.settings.concurrency) {
        await new Promise<void>((r) => {
          this.#slotFreed = r;
        });
        continue;
      }
      // Handlers that finish synchronously and a transport that settles synchronously would
      // otherwise drain a whole backlog in microtasks: let timers and I/O in now and then.
      const paused = turnTaken();
      if (paused !== undefined) {
        await paused;
        continue;
      }
      let next = raw.poll?.();
      if (next === undefined) {
        let r: IteratorResult<RawDelivery>;
        try {
          r = await it.next();
          failures = 0;
        } catch (err) {
          if (this.#stopping) break;
          if (!isRetryable(err)) {
            this.bus.logger.error({ err, pattern: this.pattern, group: this.group }, 'subscription stopped');
            break;
          }
          // A backend hiccup (busy database, lost connection): keep consuming once it recovers.
          const delayMs = Math.min(5_000, 100 * 2 ** failures++);
          this.bus.logger.warn({ err, pattern: this.pattern, group: this.group, delayMs }, 'receive failed; retrying');
          await new Promise((res) => setTimeout(res, delayMs));
          continue;
        }
        if (r.done) break;
        // Taken while closing: left unsettled, the transport subscription's close hands it back.
        if (this.#stopping) break;
        next = r.value;
      }
      this.#inFlight++;
      this.#run(next);
    }
  }

  #run(raw: RawDelivery): void {
    const slot = this.#freeSlots.pop();
    let running: Running;
    if (slot === undefined) {
      // Every slot is held by a delivery back from ctx.wait: run unslotted.
      running = { slot: -1, raw };
      this.#unslotted.add(raw);
    } else {
      this.#slots[slot] = raw;
      running = { slot, raw };
    }
    if (this.#handle(running) === undefined) this.#finished(running);
  }

  #finished(running: Running): void {
    this.#release(running);
    this.#inFlight--;
    this.#wake();
  }

  /**
   * Decodes, runs the handler and settles the delivery. Returns undefined when all of it
   * finished synchronously (a sync handler on a transport that settles synchronously), so the
   * hot path allocates no promise; otherwise `pending`, and calls #finished itself once the
   * settle is issued. Never throws: settle failures are logged.
   */
  #handle(running: Running): typeof PENDING | undefined {
    const { raw } = running;
    const { codec, clock } = this.bus;
    const { maxAttempts } = this.settings;
    let envelope: Envelope;
    try {
      envelope = codec.decode(raw.message.body);
    } catch (err) {
      this.bus.logger.warn({ ...this.#logFields(raw), err }, 'undecodable message dead-lettered');
      return this.#guard(raw, () => raw.deadLetter(DeadLetterReason.decode, { error: describeError(err) }));
    }
    if (raw.attempt > maxAttempts) {
      return this.#guard(raw, () =>
        raw.deadLetter(DeadLetterReason.maxAttempts, {
          error: `delivered ${raw.attempt} times without being settled (maxAttempts ${maxAttempts})`,
        }),
      );
    }
    const exp = raw.message.expiresAtMs;
    if (exp !== undefined && exp <= clock.now()) {
      return this.#guard(raw, () =>
        raw.deadLetter(DeadLetterReason.expired, { error: `expired at ${new Date(exp).toISOString()}` }),
      );
    }
    const delivery = new Delivery(envelope, raw);
    const hooks = this.hooks();
    let result: unknown;
    try {
      if (hooks.length === 0) result = this.settings.handler(delivery);
      else {
        result = this.#chainOf(hooks)(new DeliveryContext(delivery, this.settings, this, running));
      }
    } catch (err) {
      return this.#guard(raw, () => this.#fail(raw, err));
    }
    // The hooks and the handler finished synchronously: settle now, as without hooks.
    if (result === HANDLED_SYNC) return this.#ack(raw);
    if (isThenable(result)) {
      Promise.resolve(result).then(
        () => {
          this.#ack(raw);
          this.#finished(running);
        },
        (err: unknown) => {
          this.#guard(raw, () => this.#fail(raw, err));
          this.#finished(running);
        },
      );
      return PENDING;
    }
    return this.#ack(raw);
  }

  /** The consume hooks composed around the handler; composed again only when the bus's hooks change. */
  #chainOf(hooks: readonly ConsumeHook[]): (ctx: ConsumeContext) => Promise<void> {
    if (this.#chain?.hooks !== hooks) this.#chain = { hooks, run: compose(hooks, this.#terminal) };
    return this.#chain.run;
  }

  /** Runs the handler at the end of the hooks; resolves (to nothing) once it did. */
  readonly #terminal = (ctx: ConsumeContext): Promise<void> => {
    const result = this.settings.handler(ctx.delivery);
    return isThenable(result) ? Promise.resolve(result).then(noop) : HANDLED_SYNC;
  };

  /** Acks unless the handler settled itself. */
  #ack(raw: RawDelivery): undefined {
    if (raw.settled) return undefined;
    return this.#guard(raw, () => raw.ack());
  }

  /**
   * Issues a settle step and logs its failure instead of throwing. It does not wait for the
   * transport to confirm (close does): the handler's slot is free as soon as the settle is issued.
   */
  #guard(raw: RawDelivery, step: () => Promise<void>): undefined {
    let pending: Promise<void>;
    try {
      pending = step();
    } catch (err) {
      this.#settleFailed(raw, err);
      return undefined;
    }
    if (pending === SETTLED_SYNC) return undefined;
    const tracked = pending.then(undefined, (err: unknown) => this.#settleFailed(raw, err));
    this.#settling.add(tracked);
    void tracked.then(() => this.#settling.delete(tracked));
    return undefined;
  }

  #settleFailed(raw: RawDelivery, err: unknown): void {
    this.bus.logger.error(
      { ...this.#logFields(raw), err },
      'settling a delivery failed; it will be redelivered after its lease',
    );
  }

  #logFields(raw: RawDelivery): object {
    return { messageId: raw.message.id, topic: raw.message.topic, group: this.group, attempt: raw.attempt };
  }

  async #fail(raw: RawDelivery, err: unknown): Promise<void> {
    const { logger } = this.bus;
    const log = this.#logFields(raw);
    const error = describeError(err);
    if (raw.settled) {
      logger.warn({ ...log, err }, 'handler threw after settling its delivery');
      return;
    }
    if (!isRetryable(err)) {
      await raw.deadLetter(reasonFor(err), { error });
      return;
    }
    if (raw.attempt >= this.settings.maxAttempts) {
      await raw.deadLetter(DeadLetterReason.maxAttempts, { error });
      return;
    }
    const delayMs = backoffDelayMs(raw.attempt, this.settings.backoff);
    logger.debug({ ...log, err, delayMs }, 'handler failed; retrying');
    await raw.nack({ delayMs, error });
  }

  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#stopping = true;
      this.#slotFreed?.();
      for (const abort of this.#parked) abort(new ClosedError('subscription is closing'));
      if (this.#inFlight > 0 || this.#parked.size > 0) {
        await new Promise<void>((r) => {
          this.#idle = r;
        });
      }
      await Promise.all(this.#settling);
      await this.raw.close();
      await this.done;
      clearInterval(this.#renewer);
      this.onClosed();
    })();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** Creates a bus over a transport. */
export function createBus(options: BusOptions): Bus {
  return new Bus(options);
}
