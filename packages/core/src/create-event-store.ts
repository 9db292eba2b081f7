import { type Clock, type IdGenerator, systemClock, uuidv7Ids } from './clock.js';
import { ClosedError, ConcurrencyError, SerializationError, ValidationError } from './errors.js';
import type {
  AppendOptions,
  AppendResult,
  EventHandler,
  EventStore,
  EventStoreEngine,
  EventSubscription,
  ExpectedVersion,
  NewEvent,
  PendingEvent,
  ReadAllOptions,
  ReadOptions,
  StoredEvent,
  SubscribeAllOptions,
} from './event-store.js';
import { AllSubscription, type SubscriptionHost } from './event-subscription.js';
import { type Logger, stderrLogger } from './logger.js';
import { positiveInteger, positiveNumber } from './validate.js';

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
