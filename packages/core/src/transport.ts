/**
 * The contract every backend implements (DESIGN §2). A transport carries bytes and string
 * headers; it knows nothing of envelopes or codecs. Core never imports a client library.
 */

/** A message as handed to a transport for publishing. */
export interface TransportMessage {
  /** The envelope id; with the source it is the dedup key. */
  readonly id: string;
  /** Concrete topic (no wildcards). */
  readonly topic: string;
  readonly body: Uint8Array;
  /** String headers copied into the backend's native headers (content-type, traceparent …). */
  readonly headers: Readonly<Record<string, string>>;
  /** 0 (lowest) … 9 (highest). */
  readonly priority: number;
  /** Never delivered at or after this epoch-ms time; dead-lettered with reason `expired`. */
  readonly expiresAtMs?: number | undefined;
}

/** A stored message as read back from a transport. */
export interface InboundMessage extends TransportMessage {
  /** When the backend stored it (epoch ms). */
  readonly publishedAtMs: number;
}

export interface NackOptions {
  /** Redeliver no earlier than this many ms from now (0 = as soon as possible). */
  readonly delayMs?: number;
  /**
   * The error that caused the nack (e.g. `HANDLER: model call failed`). The redelivery it causes
   * carries it as {@link RawDelivery.lastError}, cut to {@link LAST_ERROR_MAX_BYTES}.
   */
  readonly error?: string;
}

/**
 * At most this many UTF-8 bytes of a nack's error are kept for {@link RawDelivery.lastError}; a
 * longer text is cut and ends with `…`, so that a huge error cannot bloat the backend's storage.
 */
export const LAST_ERROR_MAX_BYTES = 1024;

export interface DeadLetterOptions {
  /** The error text, e.g. `HANDLER: model call failed`. */
  readonly error?: string;
}

/**
 * One delivery of a message to one consumer group. Settling (ack / nack / deadLetter) is
 * idempotent: the first call wins, later calls resolve without effect.
 */
export interface RawDelivery {
  readonly message: InboundMessage;
  readonly group: string;
  /** 1 on the first delivery, incremented on every redelivery. */
  readonly attempt: number;
  /**
   * The error text given to the nack that caused this redelivery (at most
   * {@link LAST_ERROR_MAX_BYTES} bytes). Undefined on a first delivery, after a nack without an
   * error, and when the previous delivery ended without one: its lease expired, its consumer
   * crashed or closed its subscription while holding it. It describes the delivery just before
   * this one, never an older one. Where a backend cannot carry it to every consumer, the
   * transport says so (the NATS transport documents its limits).
   */
  readonly lastError?: string | undefined;
  /** Whether ack, nack or deadLetter has been called (or the lease was lost). */
  readonly settled: boolean;
  ack(): Promise<void>;
  nack(options?: NackOptions): Promise<void>;
  deadLetter(reason: string, options?: DeadLetterOptions): Promise<void>;
  /** Keeps the lease for `ms` more from now, so the message is not redelivered meanwhile. */
  extend(ms: number): Promise<void>;
}

export interface TransportSubscribeOptions {
  /** Consumer group: competing consumers share its messages; every group gets its own copy. */
  readonly group: string;
  /** At most this many unsettled deliveries are outstanding on the subscription. */
  readonly prefetch: number;
  /** An unsettled delivery whose lease is not extended within this time is redelivered. */
  readonly ackTimeoutMs: number;
  /**
   * The bus dead-letters a delivery whose attempt exceeds this. A backend that can stop
   * redelivering by itself (JetStream max deliveries) must keep delivering at least once more
   * than this, so that the bus sees that attempt. Absent: unlimited.
   */
  readonly maxAttempts?: number;
  /**
   * The group lives only as long as this subscription (a requester's private reply inbox, an
   * agent directory's listener): not durable, and removed with whatever it still holds when the
   * subscription closes or its process dies (after at most a minute). One subscriber per
   * ephemeral group. Default false.
   */
  readonly ephemeral?: boolean;
}

/** An async iterable of deliveries with idempotent close. */
export interface Subscription<D = RawDelivery> extends AsyncIterable<D>, AsyncDisposable {
  readonly closed: boolean;
  /**
   * Optional: a delivery that is ready now (already received and buffered), without waiting,
   * or undefined. Lets the bus skip a promise per message; it still falls back to the iterator.
   * Never used concurrently with a pending `next()`.
   */
  poll?(): D | undefined;
  /**
   * Stops delivering. Unsettled deliveries of this subscription are released for redelivery
   * at once (with attempt + 1 where they were handed out).
   */
  close(): Promise<void>;
}

/** What a backend does natively; the bus emulates or refuses the rest. */
export interface TransportCapabilities {
  /** Messages survive a restart of the process and of the backend. */
  readonly persistent: boolean;
  /** Several processes can share the same bus. */
  readonly crossProcess: boolean;
  /** Higher priority first among waiting messages. */
  readonly priority: boolean;
  /** nack with a delay redelivers no earlier than the delay. */
  readonly delayedDelivery: boolean;
  /** Expired messages are never delivered and are dead-lettered with reason `expired`. */
  readonly ttl: boolean;
  /** `*` and `>` subscription patterns. */
  readonly wildcards: boolean;
  /** Dead-lettered messages can be replayed. */
  readonly deadLetterReplay: boolean;
}

export interface DeadLetter {
  /** Id of the dead-letter record (not the message id). */
  readonly id: string;
  readonly group: string;
  /** Machine-readable reason: `max-attempts`, `expired`, `decode`, `unrecoverable`, `validation` … */
  readonly reason: string;
  readonly error?: string | undefined;
  /** Deliveries made before it was dead-lettered. */
  readonly attempts: number;
  readonly deadLetteredAtMs: number;
  /** The message as published; `message.topic` is the original topic. */
  readonly message: InboundMessage;
}

export interface DeadLetterFilter {
  /** Topic pattern (`*`, `>` allowed). */
  readonly topic?: string;
  readonly group?: string;
  readonly reason?: string;
  readonly sinceMs?: number;
  readonly untilMs?: number;
  /** Default 100. */
  readonly limit?: number;
}

/** The header counting how often a message was replayed from the dead-letter store. */
export const REPLAY_COUNT_HEADER = 'x-agentbus-replays';

/**
 * The dead-letter store of a transport. Replay puts a message back on its original topic for the
 * group that dead-lettered it, with attempt reset and the replay header incremented.
 */
export interface DeadLetterStore {
  list(filter?: DeadLetterFilter): Promise<DeadLetter[]>;
  get(id: string): Promise<DeadLetter | undefined>;
  /** Replays one record (by id) or all matching a filter; resolves with the number replayed. */
  replay(target: string | DeadLetterFilter): Promise<number>;
  /** Deletes one record (by id) or all matching a filter (all when omitted); resolves with the count. */
  purge(target?: string | DeadLetterFilter): Promise<number>;
}

export type HealthStatus = 'pass' | 'warn' | 'fail';

export interface HealthReport {
  readonly status: HealthStatus;
  readonly transport: string;
  /** Round-trip latency of the deep check. */
  readonly latencyMs?: number;
  readonly details?: Readonly<Record<string, unknown>>;
  readonly error?: string;
}

/** What {@link Transport.groupStats} reports of a consumer group. */
export interface GroupStats {
  /** Messages waiting to be delivered to the group (ready or delayed), not counting in-flight ones. */
  readonly backlog: number;
  /** Messages delivered to the group and not yet settled. */
  readonly inFlight: number;
}

export interface Transport {
  readonly name: string;
  readonly capabilities: TransportCapabilities;
  /** Opens connections; idempotent. Other methods connect lazily too. */
  connect(): Promise<void>;
  /** Resolves once every message of the batch is durable on the backend. */
  publish(batch: readonly TransportMessage[]): Promise<void>;
  /** Declares the group (durably where the backend persists) and starts consuming. */
  subscribe(pattern: string, options: TransportSubscribeOptions): Promise<Subscription<RawDelivery>>;
  readonly deadLetters: DeadLetterStore;
  health(deep?: boolean): Promise<HealthReport>;
  /**
   * How many groups a message published on `topic` now would reach. Lets request-reply fail
   * fast with NoRespondersError. Optional: absent where the backend cannot tell cheaply.
   */
  routeCount?(topic: string): Promise<number>;
  /** Backlog and in-flight count of a group, for work-queue stats and autoscaling. Optional. */
  groupStats?(group: string): Promise<GroupStats>;
  /** Idempotent. Open subscriptions are closed; later calls reject with ClosedError. */
  close(): Promise<void>;
}
