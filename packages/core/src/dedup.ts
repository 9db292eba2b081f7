import { type Clock, systemClock } from './clock.js';
import type { Envelope } from './envelope.js';
import { ConfigError } from './errors.js';
import { Fifo } from './fifo.js';
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

/**
 * The synchronous operations of an in-process store, for the dedup middleware's hot path. A key
 * is given in two parts, `head` and `tail`: the key is `head + NUL + tail`, split at its last NUL
 * (the default key's head is group and source, its tail the message id). The parts let the store
 * find a key without building its string.
 */
interface LocalIdempotencyOps {
  begin(head: string, tail: string, leaseMs: number): IdempotencyState;
  /**
   * What `begin` would answer, without claiming the key: the caller runs its handler at once and
   * claims the key (`begin`) only if that handler goes on asynchronously; one that finished
   * synchronously goes straight to `complete` (nothing else ran meanwhile to see the claim).
   */
  peek(head: string, tail: string): IdempotencyState;
  complete(head: string, tail: string, ttlMs: number): void;
  release(head: string, tail: string): void;
  /** The keys of the default identity (group, source, id) whose id has no NUL. */
  keysOf(group: string, source: string): Keys;
}

/** The keys of one head, by tail: per key one number (see memoryIdempotencyStore). */
interface Keys {
  readonly head: string;
  readonly byTail: Map<string, number>;
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

/** `key` split at its last NUL (no NUL: an empty head). */
function splitKey(key: string): [head: string, tail: string] {
  const i = key.lastIndexOf('\u0000');
  return i < 0 ? ['', key] : [key.slice(0, i), key.slice(i + 1)];
}

/**
 * An in-process store, bounded in size: beyond `maxKeys` the keys first seen longest ago go first
 * (a key claimed again, released or completed keeps its place).
 */
export function memoryIdempotencyStore(options: MemoryIdempotencyStoreOptions = {}): IdempotencyStore {
  const maxKeys = positiveInteger(options.maxKeys ?? 100_000, 'maxKeys');
  const clock = options.clock ?? systemClock;
  // Per key one number, no object: the time its state ends, in ms after `epoch`, doubled, plus 1
  // while busy; RELEASED for a claim given up (the key keeps its place, as if it were not there).
  // Small enough for V8 to keep unboxed for about six days; a plain number after that.
  const epoch = clock.now();
  const RELEASED = -1;
  const busyUntil = (until: number) => (until - epoch) * 2 + 1;
  const doneUntil = (until: number) => (until - epoch) * 2;
  const live = (v: number | undefined, now: number): v is number =>
    v !== undefined && v !== RELEASED && Math.floor(v / 2) + epoch > now;
  const stateOf = (v: number): 'busy' | 'done' => (v % 2 === 0 ? 'done' : 'busy');
  // Keys by head, then by tail: most keys of a run share a handful of heads (group and source).
  const heads = new Map<string, Keys>();
  // The default identity's heads by group and source, so that its head string is not built per message.
  const byGroup = new Map<string, Map<string, Keys>>();
  // Every key in the order first seen, as its head's keys and its tail: the eviction order.
  const orderKeys = new Fifo<Keys>();
  const orderTails = new Fifo<string>();
  let size = 0;
  const keysOfHead = (head: string): Keys => {
    let k = heads.get(head);
    if (k === undefined) {
      k = { head, byTail: new Map() };
      heads.set(head, k);
    }
    return k;
  };
  const set = (keys: Keys, tail: string, value: number) => {
    const { byTail } = keys;
    if (byTail.has(tail)) {
      byTail.set(tail, value); // keeps its place
      return;
    }
    byTail.set(tail, value);
    orderKeys.push(keys);
    orderTails.push(tail);
    size++;
    while (size > maxKeys) {
      const oldKeys = orderKeys.shift() as Keys;
      const oldTail = orderTails.shift() as string;
      oldKeys.byTail.delete(oldTail);
      size--;
      if (oldKeys.byTail.size === 0) forgetHead(oldKeys);
    }
  };
  const forgetHead = (keys: Keys) => {
    if (heads.get(keys.head) !== keys) return;
    heads.delete(keys.head);
    const [group, source] = splitKey(keys.head);
    const sources = byGroup.get(group);
    if (sources?.get(source) === keys) {
      sources.delete(source);
      if (sources.size === 0) byGroup.delete(group);
    }
  };
  const local: LocalIdempotencyOps = {
    keysOf(group, source) {
      let sources = byGroup.get(group);
      if (sources === undefined) {
        sources = new Map();
        byGroup.set(group, sources);
      }
      let k = sources.get(source);
      if (k === undefined || heads.get(k.head) !== k) {
        k = keysOfHead(`${group}\u0000${source}`);
        sources.set(source, k);
      }
      return k;
    },
    begin(head, tail, leaseMs) {
      const keys = keysOfHead(head);
      const now = clock.now();
      const v = keys.byTail.get(tail);
      if (live(v, now)) return stateOf(v);
      set(keys, tail, busyUntil(now + leaseMs));
      return 'new';
    },
    peek(head, tail) {
      const v = heads.get(head)?.byTail.get(tail);
      return live(v, clock.now()) ? stateOf(v) : 'new';
    },
    complete(head, tail, ttlMs) {
      set(keysOfHead(head), tail, doneUntil(clock.now() + ttlMs));
    },
    release(head, tail) {
      const keys = heads.get(head);
      const v = keys?.byTail.get(tail);
      if (keys === undefined || !live(v, clock.now()) || stateOf(v) !== 'busy') return;
      keys.byTail.set(tail, RELEASED);
    },
  };
  const store: IdempotencyStore = {
    async begin(key, leaseMs) {
      const [head, tail] = splitKey(key);
      return local.begin(head, tail, leaseMs);
    },
    async complete(key, ttlMs) {
      const [head, tail] = splitKey(key);
      local.complete(head, tail, ttlMs);
    },
    async release(key) {
      const [head, tail] = splitKey(key);
      local.release(head, tail);
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
  const consumeLocal = (
    ctx: ConsumeContext,
    next: Next,
    head: string,
    tail: string,
    local: LocalIdempotencyOps,
  ): Promise<void> => {
    const state = local.peek(head, tail);
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
      if (!ctx.delivery.settled) local.complete(head, tail, ttlMs);
      return HANDLED_SYNC;
    }
    local.begin(head, tail, leaseMs);
    return handled.then(
      () => {
        if (ctx.delivery.settled) local.release(head, tail);
        else local.complete(head, tail, ttlMs);
      },
      (err: unknown) => {
        local.release(head, tail);
        throw err;
      },
    );
  };
  return {
    name: 'dedup',
    consume(ctx: ConsumeContext, next: Next): Promise<void> {
      const local = localOps(store);
      if (local !== undefined && keyOf === undefined) {
        const { source, id } = ctx.envelope;
        // The key split at its last NUL, without building it (an id with a NUL in it splits elsewhere).
        if (!id.includes('\u0000')) return consumeLocal(ctx, next, local.keysOf(ctx.group, source).head, id, local);
      }
      const key = keyOf ? `${ctx.group}\u0000${keyOf(ctx)}` : idempotencyKey(ctx.group, ctx.envelope);
      if (local === undefined) return consumeAsync(ctx, next, key);
      const [head, tail] = splitKey(key);
      return consumeLocal(ctx, next, head, tail, local);
    },
  };
}
