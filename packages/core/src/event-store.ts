import { type Clock, type IdGenerator, systemClock, uuidv7Ids } from './clock.js';
import { ClosedError, ConcurrencyError, SerializationError, ValidationError } from './errors.js';
import { AllSubscription } from './event-subscription.js';
import { type Logger, stderrLogger } from './logger.js';
import { positiveInteger, positiveNumber } from './validate.js';

/** An event to append. */
export interface NewEvent<T = unknown> {
  /** Event type, e.g. `order.placed`. */
  readonly type: string;
  /** The payload: stored as JSON and read back as what `JSON.parse` makes of it. */
  readonly data: T;
  /** Unique id (UUIDv7 by default). The relay publishes it as the envelope id, so consumers can de-duplicate. */
  readonly id?: string;
  /** Free string metadata (actor, correlation, causation …). Keys starting with `es-` are reserved. */
  readonly metadata?: Readonly<Record<string, string>>;
}

/** An event as the store keeps it. */
export interface StoredEvent<T = unknown> {
  readonly streamId: string;
  /** 1, 2, 3 … within its stream. */
  readonly version: number;
  /** Global order over every stream of the store: increasing, from 1. */
  readonly position: number;
  readonly id: string;
  readonly type: string;
  readonly data: T;
  readonly metadata: Readonly<Record<string, string>>;
  /** RFC 3339 time of the append. */
  readonly time: string;
}

/**
 * What an append expects of its stream: its current version (0: no events yet), `'no-stream'`
 * (same as 0) or `'any'` (no check).
 */
export type ExpectedVersion = number | 'any' | 'no-stream';

export interface AppendOptions {
  /** Default `'any'`. A stream found at another version rejects the append with ConcurrencyError. */
  readonly expectedVersion?: ExpectedVersion;
}

export interface AppendResult {
  readonly streamId: string;
  /** The stream's version after the append (its last event's). */
  readonly version: number;
  /** The global position of the last event appended (wait for a projection to reach it to read your writes). */
  readonly position: number;
  /** The events as stored, with their versions and positions. */
  readonly events: readonly StoredEvent[];
}

export interface ReadOptions {
  /** First version to read (default 1). */
  readonly fromVersion?: number;
  /** At most this many events (default: all). */
  readonly limit?: number;
}

export interface ReadAllOptions {
  /** First global position to read (default 1). */
  readonly fromPosition?: number;
  /** At most this many events (default: all). */
  readonly limit?: number;
}

export type EventHandler<T = unknown> = (event: StoredEvent<T>) => unknown | Promise<unknown>;

export interface SubscribeAllOptions {
  /**
   * First position to hand to the handler (inclusive; default 1, the beginning). `'end'`: only
   * events appended after the subscription started. A checkpoint `c` resumes with `c + 1`.
   */
  readonly fromPosition?: number | 'end';
  /**
   * Called and awaited whenever the subscription has handled every event stored so far, with the
   * last position handled; once at the start too, also when there was nothing to handle.
   */
  readonly onCaughtUp?: (position: number) => unknown | Promise<unknown>;
}

/** A running {@link EventStore.subscribeAll}. */
export interface EventSubscription extends AsyncDisposable {
  /** Position of the last event handled (`fromPosition - 1` before the first). */
  readonly position: number;
  /**
   * Settles when the subscription stops: resolves after `close()`, rejects with the error of a
   * handler (or `onCaughtUp`, or a read that cannot be retried) that stopped it.
   */
  readonly done: Promise<void>;
  /** Stops taking events, waits for the running handler. Idempotent; never rejects. */
  close(): Promise<void>;
}

/**
 * An append-only log of events in streams (event sourcing). Appends to one stream are checked
 * against the version the caller expects (optimistic concurrency, {@link ConcurrencyError}); every
 * event also gets a global position, so that subscribers and projections can follow all streams
 * in one order and resume from a number. Reads are async iterables that page through the store.
 */
export interface EventStore extends AsyncDisposable {
  /** Appends events to a stream atomically (all or none); resolves once they are durable. */
  append(streamId: string, events: readonly NewEvent[], options?: AppendOptions): Promise<AppendResult>;
  /** A stream's events in version order. */
  read<T = unknown>(streamId: string, options?: ReadOptions): AsyncIterable<StoredEvent<T>>;
  /** Every stream's events in position order. */
  readAll<T = unknown>(options?: ReadAllOptions): AsyncIterable<StoredEvent<T>>;
  /** A stream's current version (0 when it has no events). */
  version(streamId: string): Promise<number>;
  /** The last position in the store (0 when empty). */
  head(): Promise<number>;
  /**
   * Hands every event from `fromPosition` on to `handler`, one at a time in position order: first
   * those stored (catch-up), then each one appended later — through this store at once, through
   * another process after at most the store's poll interval (or at once where the backend notifies).
   * A handler that throws stops the subscription (see `done`).
   */
  subscribeAll<T = unknown>(handler: EventHandler<T>, options?: SubscribeAllOptions): EventSubscription;
  /** Closes the subscriptions, then the store. Idempotent. */
  close(): Promise<void>;
}

/** An event ready to store: what the store keeps of a {@link NewEvent}, data as JSON. */
export interface PendingEvent {
  readonly id: string;
  readonly type: string;
  /** The data as JSON text. */
  readonly json: string;
  readonly metadata: Readonly<Record<string, string>>;
  readonly time: string;
}

/** What an engine's append did: appended at `positions` after `versionBefore`, or found the stream at `actualVersion`. */
export type EngineAppendOutcome =
  | { readonly ok: true; readonly versionBefore: number; readonly positions: readonly number[] }
  | { readonly ok: false; readonly actualVersion: number };

/**
 * The storage behind {@link createEventStore}: what a backend must do atomically. Validation,
 * ids, times, paging, subscriptions and errors are the wrapper's.
 */
export interface EventStoreEngine {
  /** Appends atomically if the stream is at `expectedVersion` (undefined: any); positions increase in commit order. */
  append(
    streamId: string,
    events: readonly PendingEvent[],
    expectedVersion: number | undefined,
  ): Promise<EngineAppendOutcome>;
  /** Up to `max` events of a stream from `fromVersion`, in version order. */
  readStream(streamId: string, fromVersion: number, max: number): Promise<StoredEvent[]>;
  /** Up to `max` events from `fromPosition`, in position order. */
  readAll(fromPosition: number, max: number): Promise<StoredEvent[]>;
  version(streamId: string): Promise<number>;
  head(): Promise<number>;
  /**
   * Resolves when an event after `position` may have been appended by anyone (spurious wake-ups
   * are fine), or when `signal` aborts. Without it, caught-up subscriptions poll.
   */
  waitForAppend?(position: number, signal: AbortSignal): Promise<void>;
  close(): Promise<void> | void;
}

export interface EventStoreOptions {
  readonly clock?: Clock;
  readonly ids?: IdGenerator;
  readonly logger?: Logger;
  /** Events fetched per round trip by reads and subscriptions. */
  readonly batchSize?: number;
  /** How often a caught-up subscription looks for appends made elsewhere, where the backend cannot notify. */
  readonly pollIntervalMs?: number;
}

export const EVENT_STORE_DEFAULTS = Object.freeze({ batchSize: 500, pollIntervalMs: 100 });

/** Metadata keys the relay uses on envelopes; appends may not set them. */
const RESERVED_METADATA = /^es-/;

function assertStreamId(streamId: unknown): asserts streamId is string {
  if (typeof streamId !== 'string' || streamId.length === 0 || streamId.length > 255) {
    throw new ValidationError(`invalid streamId ${JSON.stringify(streamId)}: 1–255 characters expected`);
  }
}

function startAt(value: number | undefined, field: string): number {
  if (value === undefined) return 1;
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new ValidationError(`invalid ${field} ${String(value)}: an integer >= 1 expected`);
  }
  return value;
}

function limitOf(value: number | undefined): number {
  if (value === undefined) return Number.POSITIVE_INFINITY;
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new ValidationError(`invalid limit ${String(value)}: an integer >= 0 expected`);
  }
  return value;
}

function expectedOf(expected: ExpectedVersion | undefined): number | undefined {
  if (expected === undefined || expected === 'any') return undefined;
  if (expected === 'no-stream') return 0;
  if (!Number.isSafeInteger(expected) || expected < 0) {
    throw new ValidationError(
      `invalid expectedVersion ${JSON.stringify(expected)}: an integer >= 0, 'no-stream' or 'any' expected`,
    );
  }
  return expected;
}

function toJson(data: unknown, type: string): string {
  let json: string | undefined;
  try {
    json = JSON.stringify(data);
  } catch (err) {
    throw new SerializationError(`data of event ${type} is not JSON-serializable`, { cause: err });
  }
  if (json === undefined) throw new SerializationError(`data of event ${type} is not JSON-serializable`);
  return json;
}

function metadataOf(metadata: unknown): Record<string, string> {
  if (metadata === undefined) return {};
  if (typeof metadata !== 'object' || metadata === null || Array.isArray(metadata)) {
    throw new ValidationError('event metadata must be an object of strings');
  }
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(metadata)) {
    if (typeof v !== 'string') throw new ValidationError(`event metadata '${k}' must be a string`);
    if (RESERVED_METADATA.test(k)) throw new ValidationError(`event metadata key '${k}' is reserved (es-*)`);
    out[k] = v;
  }
  return out;
}

/** The parts of a store its subscriptions use. */
export interface SubscriptionHost {
  readonly engine: EventStoreEngine;
  readonly batchSize: number;
  readonly pollIntervalMs: number;
  readonly logger: Logger;
  /** Counts appends made through this store: a subscription that saw it change does not wait. */
  appendCount(): number;
  /** Resolves at the next append through this store, or when `signal` aborts. */
  nextAppend(signal: AbortSignal): Promise<void>;
}

class EngineEventStore implements EventStore, SubscriptionHost {
  readonly engine: EventStoreEngine;
  readonly batchSize: number;
  readonly pollIntervalMs: number;
  readonly logger: Logger;
  readonly #clock: Clock;
  readonly #ids: IdGenerator;
  readonly #subscriptions = new Set<AllSubscription>();
  #appends = 0;
  #wake = new Set<() => void>();
  #closing: Promise<void> | undefined;

  constructor(engine: EventStoreEngine, options: EventStoreOptions) {
    this.engine = engine;
    this.#clock = options.clock ?? systemClock;
    this.#ids = options.ids ?? uuidv7Ids;
    this.logger = options.logger ?? stderrLogger;
    this.batchSize = positiveInteger(options.batchSize ?? EVENT_STORE_DEFAULTS.batchSize, 'batchSize');
    this.pollIntervalMs = positiveNumber(
      options.pollIntervalMs ?? EVENT_STORE_DEFAULTS.pollIntervalMs,
      'pollIntervalMs',
    );
  }

  appendCount(): number {
    return this.#appends;
  }

  nextAppend(signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      if (signal.aborted) return resolve();
      const done = () => {
        this.#wake.delete(done);
        signal.removeEventListener('abort', done);
        resolve();
      };
      this.#wake.add(done);
      signal.addEventListener('abort', done, { once: true });
    });
  }

  async append(streamId: string, events: readonly NewEvent[], options: AppendOptions = {}): Promise<AppendResult> {
    this.#assertOpen();
    assertStreamId(streamId);
    if (!Array.isArray(events) || events.length === 0) {
      throw new ValidationError('append needs a non-empty array of events');
    }
    const expected = expectedOf(options.expectedVersion);
    const time = new Date(this.#clock.now()).toISOString();
    const pending: PendingEvent[] = events.map((e) => {
      if (typeof e !== 'object' || e === null) throw new ValidationError('an event must be an object');
      if (typeof e.type !== 'string' || e.type.length === 0 || e.type.length > 255) {
        throw new ValidationError(`invalid event type ${JSON.stringify(e.type)}: 1–255 characters expected`);
      }
      if (e.id !== undefined && (typeof e.id !== 'string' || e.id.length === 0)) {
        throw new ValidationError('an event id must be a non-empty string');
      }
      return {
        id: e.id ?? this.#ids(),
        type: e.type,
        json: toJson(e.data, e.type),
        metadata: metadataOf(e.metadata),
        time,
      };
    });
    const outcome = await this.engine.append(streamId, pending, expected);
    if (!outcome.ok) {
      const expectedVersion = options.expectedVersion ?? 'any';
      throw new ConcurrencyError(
        `stream ${streamId} is at version ${outcome.actualVersion}, the append expected ${expectedVersion}`,
        { data: { streamId, expectedVersion, actualVersion: outcome.actualVersion } },
      );
    }
    this.#appends++;
    for (const wake of [...this.#wake]) wake();
    const stored = pending.map(
      (p, i): StoredEvent => ({
        streamId,
        version: outcome.versionBefore + i + 1,
        position: outcome.positions[i] as number,
        id: p.id,
        type: p.type,
        data: JSON.parse(p.json),
        metadata: { ...p.metadata },
        time: p.time,
      }),
    );
    const last = stored[stored.length - 1] as StoredEvent;
    return { streamId, version: last.version, position: last.position, events: stored };
  }

  read<T>(streamId: string, options: ReadOptions = {}): AsyncIterable<StoredEvent<T>> {
    this.#assertOpen();
    assertStreamId(streamId);
    const from = startAt(options.fromVersion, 'fromVersion');
    return this.#pages(
      (at, max) => this.engine.readStream(streamId, at, max),
      from,
      limitOf(options.limit),
      (e) => e.version,
    );
  }

  readAll<T>(options: ReadAllOptions = {}): AsyncIterable<StoredEvent<T>> {
    this.#assertOpen();
    const from = startAt(options.fromPosition, 'fromPosition');
    return this.#pages(
      (at, max) => this.engine.readAll(at, max),
      from,
      limitOf(options.limit),
      (e) => e.position,
    );
  }

  async *#pages<T>(
    fetch: (at: number, max: number) => Promise<StoredEvent[]>,
    from: number,
    limit: number,
    key: (e: StoredEvent) => number,
  ): AsyncGenerator<StoredEvent<T>> {
    let at = from;
    let left = limit;
    while (left > 0) {
      this.#assertOpen();
      const want = Math.min(this.batchSize, left);
      const page = await fetch(at, want);
      yield* page as StoredEvent<T>[];
      if (page.length < want) return;
      at = key(page[page.length - 1] as StoredEvent) + 1;
      left -= page.length;
    }
  }

  version(streamId: string): Promise<number> {
    this.#assertOpen();
    assertStreamId(streamId);
    return this.engine.version(streamId);
  }

  head(): Promise<number> {
    this.#assertOpen();
    return this.engine.head();
  }

  subscribeAll<T>(handler: EventHandler<T>, options: SubscribeAllOptions = {}): EventSubscription {
    this.#assertOpen();
    if (typeof handler !== 'function') throw new ValidationError('subscribeAll needs a handler function');
    const from = options.fromPosition === 'end' ? 'end' : startAt(options.fromPosition, 'fromPosition');
    const sub = new AllSubscription(this, handler as EventHandler, from, options.onCaughtUp, () =>
      this.#subscriptions.delete(sub),
    );
    this.#subscriptions.add(sub);
    return sub;
  }

  close(): Promise<void> {
    this.#closing ??= (async () => {
      await Promise.all([...this.#subscriptions].map((s) => s.close()));
      await this.engine.close();
    })();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #assertOpen(): void {
    if (this.#closing) throw new ClosedError('event store is closed');
  }
}

/** An {@link EventStore} over a storage engine (what `memoryEventStore`, `sqliteEventStore` and `redisEventStore` build on). */
export function createEventStore(engine: EventStoreEngine, options: EventStoreOptions = {}): EventStore {
  return new EngineEventStore(engine, options);
}

/**
 * Rebuilds state from a stream: folds its events with `reduce` from `initial`. Resolves with the
 * state and the version it reflects — the `expectedVersion` of the next append decided on it.
 */
export async function foldStream<S, T = unknown>(
  store: EventStore,
  streamId: string,
  reduce: (state: S, event: StoredEvent<T>) => S,
  initial: S,
): Promise<{ state: S; version: number }> {
  let state = initial;
  let version = 0;
  for await (const e of store.read<T>(streamId)) {
    state = reduce(state, e);
    version = e.version;
  }
  return { state, version };
}
