import { type Clock, systemClock } from './clock.js';
import type { Envelope } from './envelope.js';
import { ConfigError } from './errors.js';
import { type ConsumeContext, HANDLED_SYNC, type Middleware, type Next } from './middleware.js';
import { positiveInteger, positiveNumber } from './validate.js';

/** What `begin` found for a key. */
export type IdempotencyState = 'new' | 'done' | 'busy';

/**
 * Where the dedup middleware remembers which messages a group has processed. A key is claimed
 * (`begin` → 'new') while its handler runs, for at most `leaseMs`; `complete` remembers it as done
 * for `ttlMs`; `release` gives a claim up after a failure so that the redelivery runs again.
 */
export interface IdempotencyStore {
  begin(key: string, leaseMs: number): Promise<IdempotencyState>;
  complete(key: string, ttlMs: number): Promise<void>;
  release(key: string): Promise<void>;
}

export interface MemoryIdempotencyStoreOptions {
  /** Keys remembered at most; the oldest go first beyond it (default 100,000). */
  readonly maxKeys?: number;
  readonly clock?: Clock;
}

/** The synchronous operations of an in-process store, for the dedup middleware's hot path. */
interface LocalIdempotencyOps {
  begin(key: string, leaseMs: number): IdempotencyState;
  /**
   * What `begin` would answer, without claiming the key: the caller runs its handler at once and
   * claims the key (`begin`) only if that handler goes on asynchronously; one that finished
   * synchronously goes straight to `complete` (nothing else ran meanwhile to see the claim).
   */
  peek(key: string): IdempotencyState;
  complete(key: string, ttlMs: number): void;
  release(key: string): void;
}

/**
 * Where the memory store keeps a function of the store that gives its {@link LocalIdempotencyOps}
 * while the store's methods are still its own; the middleware calls them instead of awaiting a
 * promise per message. Not enumerable, so a copy of the store (`{ ...store }`) is used through its
 * methods. A registered symbol rather than an export, so it is no public API.
 */
const LOCAL_OPS = Symbol.for('agentbus.localIdempotencyOps');

type LocalOpsOf = (store: IdempotencyStore) => LocalIdempotencyOps | undefined;

function localOps(store: IdempotencyStore): LocalIdempotencyOps | undefined {
  return (store as unknown as { [LOCAL_OPS]?: LocalOpsOf })[LOCAL_OPS]?.(store);
}

/** An in-process store: a Map with expiry times, bounded in size (oldest evicted first). */
export function memoryIdempotencyStore(options: MemoryIdempotencyStoreOptions = {}): IdempotencyStore {
  const maxKeys = positiveInteger(options.maxKeys ?? 100_000, 'maxKeys');
  const clock = options.clock ?? systemClock;
  // Per key one number, no object: the time its state ends, in ms after `epoch`, doubled, plus 1
  // while busy. Small enough for V8 to keep unboxed for about six days; a plain number after that.
  const keys = new Map<string, number>();
  const epoch = clock.now();
  const busyUntil = (until: number) => (until - epoch) * 2 + 1;
  const doneUntil = (until: number) => (until - epoch) * 2;
  const untilOf = (v: number) => Math.floor(v / 2) + epoch;
  const stateOf = (v: number): 'busy' | 'done' => (v % 2 === 0 ? 'done' : 'busy');
  // One iterator for all evictions: a fresh one per eviction would step over every entry deleted
  // (re-inserted) since the map's last rehash, each time. Live entries are all ahead of it: what
  // it passed was evicted, and a re-inserted key goes to the end.
  let oldestFirst: MapIterator<string> | undefined;
  // The key set last: a claim completed right after it was made (a synchronous handler) is still
  // the newest, so it is updated in place rather than deleted and re-inserted.
  let newestKey: string | undefined;
  const set = (key: string, value: number, present = true) => {
    if (present && key !== newestKey) keys.delete(key); // re-inserted: the newest in iteration order
    newestKey = key;
    keys.set(key, value);
    while (keys.size > maxKeys) {
      let r = oldestFirst?.next();
      if (r === undefined || r.done) {
        oldestFirst = keys.keys();
        r = oldestFirst.next();
      }
      keys.delete(r.value as string);
    }
  };
  const local: LocalIdempotencyOps = {
    begin(key, leaseMs) {
      const now = clock.now();
      const v = keys.get(key);
      if (v !== undefined && untilOf(v) > now) return stateOf(v);
      set(key, busyUntil(now + leaseMs), v !== undefined);
      return 'new';
    },
    peek(key) {
      const v = keys.get(key);
      return v !== undefined && untilOf(v) > clock.now() ? stateOf(v) : 'new';
    },
    complete(key, ttlMs) {
      set(key, doneUntil(clock.now() + ttlMs));
    },
    release(key) {
      const v = keys.get(key);
      if (v === undefined || stateOf(v) !== 'busy') return;
      keys.delete(key);
      if (key === newestKey) newestKey = undefined;
    },
  };
  const store: IdempotencyStore = {
    async begin(key, leaseMs) {
      return local.begin(key, leaseMs);
    },
    async complete(key, ttlMs) {
      local.complete(key, ttlMs);
    },
    async release(key) {
      local.release(key);
    },
  };
  const own = { begin: store.begin, complete: store.complete, release: store.release };
  const localOf: LocalOpsOf = (s) =>
    s.begin === own.begin && s.complete === own.complete && s.release === own.release ? local : undefined;
  Object.defineProperty(store, LOCAL_OPS, { value: localOf });
  return store;
}

/**
 * The key the dedup middleware uses for a message in a group (with the default identity: source
 * and id). A handler that commits its side effect and the completion together (see the stores'
 * atomic completion) passes this key.
 */
export function idempotencyKey(group: string, envelope: Pick<Envelope, 'source' | 'id'>): string {
  return `${group}\u0000${envelope.source}\u0000${envelope.id}`;
}

export interface DedupOptions {
  readonly store: IdempotencyStore;
  /** How long a processed message is remembered (default 24 h): duplicates later than that run again. */
  readonly ttlMs?: number;
  /**
   * How long a claim holds while its handler runs (default 30 s, the bus's default ack timeout).
   * A duplicate arriving meanwhile is put back for `busyDelayMs` (that counts an attempt); a claim
   * whose consumer died expires after this, so the transport's redelivery of that message runs.
   * Keep it at least the longest handler and about the subscription's `ackTimeoutMs`.
   */
  readonly leaseMs?: number;
  /** How long a duplicate waits while the first delivery is still being handled (default 1 s). */
  readonly busyDelayMs?: number;
  /** The message's identity; default: source and id of the envelope (its dedup key). */
  readonly key?: (ctx: ConsumeContext) => string;
}

/**
 * Idempotent consumer: a message the group has already processed is acked without running the
 * handler again, so redeliveries (a lost ack, a crashed consumer, a replay of a message that did
 * go through, a publisher retry) have their effect once. Keys include the group, so two groups
 * sharing a store never suppress each other's messages. Effectively once, with the usual limit:
 * a consumer that dies after the handler's side effect but before `complete` lets a redelivery
 * run it again once the claim expired (make the side effect and the completion one transaction
 * where that matters).
 */
export function dedup(options: DedupOptions): Middleware {
  const { store } = options;
  if (typeof store?.begin !== 'function') throw new ConfigError('an IdempotencyStore is required', { path: 'store' });
  const ttlMs = positiveNumber(options.ttlMs ?? 24 * 3_600_000, 'ttlMs');
  const leaseMs = positiveNumber(options.leaseMs ?? 30_000, 'leaseMs');
  const busyDelayMs = positiveNumber(options.busyDelayMs ?? 1_000, 'busyDelayMs');
  const keyOf = options.key;
  /** A message seen before: acked without the handler when done, put back while it is being handled. */
  const seenBefore = (ctx: ConsumeContext, state: 'done' | 'busy'): Promise<void> | undefined => {
    if (state === 'done') {
      ctx.state.set('dedup', 'duplicate');
      return undefined; // not handled again; the bus acks it
    }
    ctx.state.set('dedup', 'busy');
    return ctx.delivery.nack({ delayMs: busyDelayMs, error: 'a duplicate is being handled' });
  };
  const consumeAsync = async (ctx: ConsumeContext, next: Next, key: string): Promise<void> => {
    const state = await store.begin(key, leaseMs);
    if (state !== 'new') {
      await seenBefore(ctx, state);
      return;
    }
    try {
      await next();
    } catch (err) {
      await store.release(key).catch(() => {});
      throw err;
    }
    // A handler that settled the delivery itself (a nack, say) may see it again: not done.
    if (ctx.delivery.settled) await store.release(key).catch(() => {});
    else await store.complete(key, ttlMs);
  };
  /**
   * {@link consumeAsync} on an in-process store: no promise but the handler chain's, and none at
   * all when that finished synchronously.
   */
  const consumeLocal = (ctx: ConsumeContext, next: Next, key: string, local: LocalIdempotencyOps): Promise<void> => {
    const state = local.peek(key);
    if (state !== 'new') return seenBefore(ctx, state) ?? HANDLED_SYNC;
    // Claimed only once the chain goes asynchronous: until then nothing else runs to see the claim.
    let handled: Promise<void>;
    try {
      handled = next();
    } catch (err) {
      return Promise.reject(err);
    }
    if (handled === HANDLED_SYNC) {
      // A handler that settled the delivery itself (a nack, say) may see it again: not done.
      if (!ctx.delivery.settled) local.complete(key, ttlMs);
      return HANDLED_SYNC;
    }
    local.begin(key, leaseMs);
    return handled.then(
      () => {
        if (ctx.delivery.settled) local.release(key);
        else local.complete(key, ttlMs);
      },
      (err: unknown) => {
        local.release(key);
        throw err;
      },
    );
  };
  return {
    name: 'dedup',
    consume(ctx: ConsumeContext, next: Next): Promise<void> {
      const key = keyOf ? `${ctx.group}\u0000${keyOf(ctx)}` : idempotencyKey(ctx.group, ctx.envelope);
      const local = localOps(store);
      return local ? consumeLocal(ctx, next, key, local) : consumeAsync(ctx, next, key);
    },
  };
}
