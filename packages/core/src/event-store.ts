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
  /** Closes the subscriptions, then the store. Idempotent. Stop projections first, so that they save their checkpoints. */
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
