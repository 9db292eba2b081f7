import { type Clock, systemClock } from './clock.js';
import { withAttributes } from './envelope.js';
import { ConfigError, describeError, isRetryable } from './errors.js';
import type { Logger } from './logger.js';
import {
  type ConsumeContext,
  HANDLED_SYNC,
  type Middleware,
  type Next,
  type PublishContext,
  type SubscriptionInfo,
} from './middleware.js';
import { ReorderBuffer } from './reorder-buffer.js';
import type { SequenceStore, WorkflowBlock } from './sequence-store.js';
import { REPLAY_COUNT_HEADER } from './transport.js';
import { positiveInteger, positiveNumber } from './validate.js';

/** Dead-letter reasons written by the sequencing middleware. */
export const SequencingReason = Object.freeze({
  /** Held past a gap that timed out, with `onGap: 'dead-letter'`. */
  gap: 'sequence-gap',
  /** Arrived after its gap had been given up on (`onGap: 'release'`). */
  late: 'sequence-late',
  /** Its workflow is blocked by an earlier dead letter (`preserveOrderOnDeadLetter`). */
  blocked: 'workflow-blocked',
});

export interface SequencingOptions {
  readonly store: SequenceStore;
  /** Number envelopes that have a `workflowid` and no `sequence` at publish (default true). */
  readonly assign?: boolean;
  /** How long held messages wait for a missing one before `onGap` applies (default 60 s). */
  readonly gapTimeoutMs?: number;
  /** After a gap timeout: go on past the gap (default), or dead-letter what waits behind it. */
  readonly onGap?: 'release' | 'dead-letter';
  /**
   * Messages held ahead of their turn, at most, across all workflows (default 10,000); a
   * subscription also holds at most `prefetch - 1`, so that the missing message can still be
   * fetched. A message beyond either bound is put back for `overflowDelayMs` (that counts an attempt).
   */
  readonly maxHeld?: number;
  readonly overflowDelayMs?: number;
  /**
   * Order-preserving dead letters: once a message of a workflow is dead-lettered, later messages
   * of that workflow are dead-lettered as `workflow-blocked` instead of handled, until the blocking
   * message is replayed and handled, or the block is skipped (default false).
   */
  readonly preserveOrderOnDeadLetter?: boolean;
  /** How often held workflows re-read a shared store and check gap timeouts (default 100 ms). */
  readonly checkEveryMs?: number;
  /** Called for each gap given up on (also logged, and listed by `gaps()`). */
  readonly onGapReport?: (gap: SequenceGap) => void;
  readonly clock?: Clock;
  readonly logger?: Logger;
}

export const SEQUENCING_DEFAULTS = Object.freeze({
  assign: true,
  gapTimeoutMs: 60_000,
  onGap: 'release' as const,
  maxHeld: 10_000,
  overflowDelayMs: 250,
  preserveOrderOnDeadLetter: false,
  checkEveryMs: 100,
});

/** A range of sequence numbers that never arrived in time. */
export interface SequenceGap {
  readonly group: string;
  readonly workflowId: string;
  readonly from: number;
  readonly to: number;
  /** What happened to the messages waiting behind it. */
  readonly action: 'released' | 'dead-lettered';
  readonly atMs: number;
}

export interface Sequencing extends Middleware {
  /** Gaps met lately (the last 1,000), oldest first. Replay them with `replayWorkflow`. */
  gaps(): SequenceGap[];
  /** Messages held right now, waiting for their turn. */
  held(): number;
  /**
   * Lifts the block of a workflow without replaying the message that caused it: its sequence
   * number, if any, counts as done, and later messages flow again. Resolves whether there was one.
   */
  skip(group: string, workflowId: string): Promise<boolean>;
  /** Stops the background check; held messages stay held until their turn or the bus closes. */
  close(): void;
}

type Verdict = { kind: 'run' } | { kind: 'duplicate' } | { kind: 'dead-letter'; reason: string; error: string };

const RUN: Verdict = Object.freeze({ kind: 'run' });
const DUPLICATE: Verdict = Object.freeze({ kind: 'duplicate' });
/** Lanes a sequencing instance keeps on an in-process store before it drops idle ones. */
const MAX_LANES = 10_000;
const noop = (): void => {};
const READY: Promise<void> = Promise.resolve();

interface Waiter {
  /** Set when the message starts waiting for its turn (most get it at once and never wait). */
  resolve(v: Verdict): void;
  verdict: Verdict | undefined;
  readonly sub: SubscriptionInfo;
}

class Lane {
  readonly buf: ReorderBuffer<Waiter>;
  running = false;
  /** The expected sequence was read from the store just now (no need to read it again before running). */
  fresh = true;
  /** When the lane started waiting with messages held and no progress. */
  since = 0;
  ready: Promise<void> = READY;
  /** `ready` has settled: the lane knows its expected sequence. */
  isReady = false;
  constructor(
    /** The lane's key in the lane map (group and workflow). */
    readonly key: string,
    readonly group: string,
    readonly workflowId: string,
    maxHeld: number,
  ) {
    this.buf = new ReorderBuffer<Waiter>({ maxHeld });
  }
}

/**
 * The synchronous operations of an in-process store (see LOCAL_OPS in sequence-store.ts); `key`
 * is a lane's key, `<group>\u0000<workflowId>`, which is also how that store keys its maps.
 */
interface LocalOps {
  nextSequence(workflowId: string): number;
  expected(key: string): number;
  advance(key: string, seq: number): number;
}

const LOCAL_OPS = Symbol.for('agentbus.localSequenceOps');

/** `store`'s synchronous operations if it is a memory store whose methods are its own, else undefined. */
function localOps(store: SequenceStore): LocalOps | undefined {
  return (store as unknown as { [LOCAL_OPS]?: (s: SequenceStore) => LocalOps | undefined })[LOCAL_OPS]?.(store);
}

function settle(w: Waiter, v: Verdict): void {
  if (w.verdict) return;
  w.verdict = v;
  w.resolve(v);
}

/**
 * Per-workflow ordering. At publish, an envelope with a `workflowid` gets the workflow's next
 * `sequence` from the store (durable on SQLite and Redis, so a restart continues it). On consume,
 * messages of one workflow are handled one at a time in sequence order, per group: one that comes
 * early waits (without holding a concurrency slot) until the one before it was handled; one that
 * was handled already is acked as a duplicate. If a missing message does not come within
 * `gapTimeoutMs`, the waiting ones are released past the gap or dead-lettered (`onGap`), and the
 * gap is reported; a message of a released gap that comes late is dead-lettered `sequence-late`,
 * never dropped. Messages without a workflow id or sequence pass through. Put `dedup` inside it
 * (added after) when handlers must not run twice: sequencing orders, dedup de-duplicates.
 */
export function sequencing(options: SequencingOptions): Sequencing {
  const { store } = options;
  if (typeof store?.expected !== 'function') throw new ConfigError('a SequenceStore is required', { path: 'store' });
  const o = { ...SEQUENCING_DEFAULTS, ...options };
  const gapTimeoutMs = positiveNumber(o.gapTimeoutMs, 'gapTimeoutMs');
  const maxHeld = positiveInteger(o.maxHeld, 'maxHeld');
  const overflowDelayMs = positiveNumber(o.overflowDelayMs, 'overflowDelayMs');
  const checkEveryMs = positiveNumber(o.checkEveryMs, 'checkEveryMs');
  if (o.onGap !== 'release' && o.onGap !== 'dead-letter') {
    throw new ConfigError(`must be 'release' or 'dead-letter', got ${String(o.onGap)}`, { path: 'onGap' });
  }
  const clock = o.clock ?? systemClock;
  const lanes = new Map<string, Lane>();
  /** Where forget goes on looking for idle lanes to drop (oldest first). */
  let sweep: MapIterator<Lane> | undefined;
  const heldBySub = new WeakMap<SubscriptionInfo, number>();
  const recentGaps: SequenceGap[] = [];
  let totalHeld = 0;
  let timer: NodeJS.Timeout | undefined;
  let checking = false;

  const countHeld = (sub: SubscriptionInfo, d: number) => {
    totalHeld += d;
    heldBySub.set(sub, (heldBySub.get(sub) ?? 0) + d);
  };
  const laneKey = (group: string, wf: string) => `${group}\u0000${wf}`;

  /**
   * The workflow's lane, made (its expected sequence read from the store) if it has none; a
   * promise of it while the store has not answered.
   */
  const laneOf = (k: string, group: string, wf: string): Lane | Promise<Lane> => {
    const l = lanes.get(k);
    const local = localOps(store);
    if (l?.isReady) {
      // An idle lane kept for its workflow's next message: as good as a new one once it read the store.
      if (local && isIdle(l)) {
        l.buf.moveTo(local.expected(k));
        l.fresh = true;
      }
      return l;
    }
    if (l) return l.ready.then(() => l);
    const created = new Lane(k, group, wf, maxHeld);
    lanes.set(k, created);
    if (local) {
      created.buf.moveTo(local.expected(k));
      created.isReady = true;
      return created;
    }
    created.ready = store.expected(group, wf).then((n) => {
      created.buf.moveTo(n);
      created.isReady = true;
    });
    return created.ready.then(() => created);
  };

  const isIdle = (l: Lane) => !l.running && l.buf.held === 0 && l.buf.lowestHeld === undefined;

  /**
   * Drops an idle lane. On an in-process store idle lanes are kept (up to MAX_IDLE_LANES lanes in
   * all, the oldest idle ones going first beyond that): a workflow's next message reuses its lane
   * instead of making one and throwing it away per message. On a shared store the lane goes, so
   * that the next message reads what other processes did before it decides anything.
   */
  const forget = (l: Lane) => {
    if (!isIdle(l)) return;
    if (!localOps(store)) {
      lanes.delete(l.key);
      return;
    }
    for (let tries = 0; lanes.size > MAX_LANES && tries < 16; tries++) {
      let r = sweep?.next();
      if (r === undefined || r.done) {
        sweep = lanes.values();
        r = sweep.next();
        if (r.done) return;
      }
      if (isIdle(r.value)) lanes.delete(r.value.key);
    }
  };

  /** Hands the turn to the expected message if it is waiting. */
  const pump = (l: Lane) => {
    if (l.running) return;
    const n = l.buf.next();
    if (n) {
      l.running = true;
      settle(n.item, RUN);
      return;
    }
    if (l.buf.lowestHeld === undefined) forget(l);
  };

  const release = (items: readonly Waiter[], v: Verdict) => {
    for (const w of items) settle(w, v);
  };

  const startTimer = () => {
    if (timer) return;
    timer = setInterval(() => void check(), checkEveryMs);
    timer.unref();
  };

  const report = (gap: SequenceGap) => {
    recentGaps.push(gap);
    if (recentGaps.length > 1_000) recentGaps.shift();
    o.logger?.warn({ ...gap }, 'sequence gap timed out');
    o.onGapReport?.(gap);
  };

  /** Re-reads the store for held workflows (another process may have moved on) and applies gap timeouts. */
  const check = async () => {
    if (checking) return;
    checking = true;
    try {
      let waiting = false;
      for (const l of [...lanes.values()]) {
        if (l.buf.lowestHeld === undefined) continue;
        waiting = true;
        if (l.running) continue;
        const n = await store.expected(l.group, l.workflowId);
        if (l.running) continue;
        release(l.buf.moveTo(n), DUPLICATE);
        pump(l);
        if (l.running || l.buf.lowestHeld === undefined) continue;
        if (clock.now() - l.since < gapTimeoutMs) continue;
        const blockedBy = o.preserveOrderOnDeadLetter ? await store.blocked(l.group, l.workflowId) : undefined;
        if (l.running) continue;
        const from = l.buf.expected;
        const to = (l.buf.lowestHeld ?? from) - 1;
        if (blockedBy || o.onGap === 'dead-letter') {
          const items = l.buf.drain();
          const reason = blockedBy ? SequencingReason.blocked : SequencingReason.gap;
          const error = blockedBy
            ? blockedError(l.workflowId, blockedBy)
            : `workflow ${l.workflowId}: sequence ${from}…${to} missing after ${gapTimeoutMs} ms`;
          release(items, { kind: 'dead-letter', reason, error });
          if (!blockedBy) {
            report({ group: l.group, workflowId: l.workflowId, from, to, action: 'dead-lettered', atMs: clock.now() });
          }
          forget(l);
          continue;
        }
        const gap = l.buf.skipGap();
        if (!gap) continue;
        await store.skip(l.group, l.workflowId, gap.from, gap.to);
        report({ group: l.group, workflowId: l.workflowId, ...gap, action: 'released', atMs: clock.now() });
        l.since = clock.now();
        pump(l);
      }
      if (!waiting && timer) {
        clearInterval(timer);
        timer = undefined;
      }
    } catch (err) {
      o.logger?.warn({ err }, 'sequencing check failed; trying again');
    } finally {
      checking = false;
    }
  };

  /** Runs the handler chain for the message whose turn it is; the lane is marked running. */
  const run = (ctx: ConsumeContext, l: Lane, seq: number, next: Next): Promise<void> => {
    const local = localOps(store);
    return local ? runLocal(ctx, l, seq, next, local) : runAsync(ctx, l, seq, next);
  };

  const runAsync = async (ctx: ConsumeContext, l: Lane, seq: number, next: Next): Promise<void> => {
    try {
      if (!l.fresh && handledAlready(ctx, l, seq, await store.expected(ctx.group, l.workflowId))) return;
      await (o.preserveOrderOnDeadLetter ? runGuarded(ctx, next, seq) : next());
      if (processed(ctx)) progressed(l, await store.advance(ctx.group, l.workflowId, seq));
    } finally {
      turnDone(l);
    }
  };

  /**
   * {@link runAsync} on an in-process store: no promise but the handler chain's, and none at all
   * when that finished synchronously.
   */
  const runLocal = (ctx: ConsumeContext, l: Lane, seq: number, next: Next, local: LocalOps): Promise<void> => {
    let handled: Promise<void>;
    try {
      if (!l.fresh && handledAlready(ctx, l, seq, local.expected(l.key))) {
        turnDone(l);
        return HANDLED_SYNC;
      }
      handled = o.preserveOrderOnDeadLetter ? runGuarded(ctx, next, seq) : next();
    } catch (err) {
      turnDone(l);
      return Promise.reject(err);
    }
    const done = () => {
      try {
        if (processed(ctx)) progressed(l, local.advance(l.key, seq));
      } finally {
        turnDone(l);
      }
    };
    if (handled === HANDLED_SYNC) {
      done();
      return HANDLED_SYNC;
    }
    return handled.then(done, (err: unknown) => {
      turnDone(l);
      throw err;
    });
  };

  /** Whether the store expects a later message than `seq` (another process handled it): then a duplicate. */
  const handledAlready = (ctx: ConsumeContext, l: Lane, seq: number, expected: number): boolean => {
    if (expected <= seq) return false;
    release(l.buf.moveTo(expected), DUPLICATE);
    ctx.state.set('sequencing', 'duplicate');
    return true;
  };

  /**
   * Whether the handler chain processed the message: not if the handler or an inner middleware
   * put it back or dead-lettered it (a busy dedup claim …; a dead-lettered one has blocked its
   * workflow in runGuarded if asked to).
   */
  const processed = (ctx: ConsumeContext): boolean => !ctx.delivery.settled || ctx.delivery.settledAs === 'ack';

  /** The store moved the lane on to `expected` after a message was processed. */
  const progressed = (l: Lane, expected: number): void => {
    release(l.buf.moveTo(expected), DUPLICATE);
    // The gap clock restarts at progress; with nothing held it restarts anyway when a message is.
    if (l.buf.lowestHeld !== undefined) l.since = clock.now();
  };

  /** The running message is done (processed or not): the turn goes to the next one. */
  const turnDone = (l: Lane): void => {
    l.running = false;
    l.fresh = false;
    pump(l);
  };

  /** Runs `next`; with order-preserving dead letters, a failure that will be dead-lettered blocks the workflow. */
  const runGuarded = async (ctx: ConsumeContext, next: Next, seq: number | undefined) => {
    if (!o.preserveOrderOnDeadLetter) return next();
    try {
      await next();
    } catch (err) {
      if (!isRetryable(err) || ctx.delivery.attempt >= ctx.subscription.maxAttempts) {
        await blockBy(ctx, seq, describeError(err));
      }
      throw err;
    }
    if (ctx.delivery.settledAs === 'dead-letter') await blockBy(ctx, seq, 'dead-lettered by a handler or middleware');
  };

  /** Blocks the delivery's workflow (it is being dead-lettered) and dead-letters what waits behind it. */
  const blockBy = async (ctx: ConsumeContext, seq: number | undefined, reason: string) => {
    const wf = ctx.envelope.workflowid as string;
    const block: WorkflowBlock = { messageId: ctx.envelope.id, sequence: seq, reason, atMs: clock.now() };
    await store.block(ctx.group, wf, block);
    const l = lanes.get(laneKey(ctx.group, wf));
    if (l)
      release(l.buf.drain(), { kind: 'dead-letter', reason: SequencingReason.blocked, error: blockedError(wf, block) });
  };

  /**
   * The consume hook. Not async: in the common case (the workflow's lane is known, the message is
   * the expected one) it goes straight to the handler chain without a promise of its own.
   */
  const consume = (ctx: ConsumeContext, next: Next): Promise<void> => {
    const wf = ctx.envelope.workflowid;
    if (wf === undefined) return next();
    const seq = ctx.envelope.sequence;
    const sequenced = seq !== undefined && Number.isInteger(seq) && seq >= 1;
    if (o.preserveOrderOnDeadLetter || !sequenced) return consumeGuarded(ctx, next, wf, seq, sequenced);
    return enterLane(ctx, next, laneKey(ctx.group, wf), wf, seq);
  };

  /** With order-preserving dead letters, or without a sequence: checks the workflow's block first. */
  const consumeGuarded = async (
    ctx: ConsumeContext,
    next: Next,
    wf: string,
    seq: number | undefined,
    sequenced: boolean,
  ): Promise<void> => {
    const { envelope, group, delivery } = ctx;
    if (o.preserveOrderOnDeadLetter) {
      const b = await store.blocked(group, wf);
      // A replayed message behind a sequenced block waits for its turn instead (the blocking one is
      // likely being replayed with it; if it is not, the gap timeout dead-letters it again).
      const waits =
        b?.sequence !== undefined &&
        sequenced &&
        (seq as number) > b.sequence &&
        delivery.transportHeaders[REPLAY_COUNT_HEADER] !== undefined;
      if (b && b.messageId !== envelope.id && !waits) {
        await delivery.deadLetter(SequencingReason.blocked, { error: blockedError(wf, b) });
        return;
      }
      // The blocking message is back (replayed). Sequenced, the block lifts now: its sequence keeps
      // the messages replayed after it waiting for it, and a new failure blocks again. Unsequenced,
      // only its success lifts the block (nothing else would keep the others behind it).
      if (b && sequenced && b.sequence === seq) await store.unblock(group, wf);
    }
    if (!sequenced) {
      await runGuarded(ctx, next, undefined);
      if (o.preserveOrderOnDeadLetter && (!ctx.delivery.settled || ctx.delivery.settledAs === 'ack')) {
        const b = await store.blocked(group, wf);
        if (b?.messageId === envelope.id) await store.unblock(group, wf);
      }
      return;
    }
    return enterLane(ctx, next, laneKey(group, wf), wf, seq as number);
  };

  /** Enters the workflow's lane once it knows its expected sequence (at once when it does). */
  const enterLane = (ctx: ConsumeContext, next: Next, k: string, wf: string, seq: number): Promise<void> => {
    const l = laneOf(k, ctx.group, wf);
    return l instanceof Lane ? enter(ctx, next, k, l, seq) : l.then((ready) => enter(ctx, next, k, ready, seq));
  };

  /**
   * Takes the message's place in its lane: runs it if it is its turn, waits for its turn if it is
   * early, and settles a duplicate or an overflow.
   */
  const enter = (ctx: ConsumeContext, next: Next, k: string, l: Lane, seq: number): Promise<void> => {
    // Forgotten while this delivery waited for it (its last message finished meanwhile), a lane
    // is stale: a later delivery makes a new one, and whatever waited in the old one would wait forever.
    if (lanes.get(k) !== l) return enterLane(ctx, next, k, l.workflowId, seq);
    // Its turn in an idle lane: what offer and pump would do, without a place in the buffer.
    if (seq === l.buf.expected && !l.running && l.buf.lowestHeld === undefined) {
      l.running = true;
      return run(ctx, l, seq, next);
    }
    const { delivery } = ctx;
    const sub = ctx.subscription;
    if (seq > l.buf.expected) {
      const subHeld = heldBySub.get(sub) ?? 0;
      if (totalHeld >= maxHeld || subHeld >= Math.max(0, sub.prefetch - 1)) {
        return delivery.nack({ delayMs: overflowDelayMs, error: 'reorder buffer full' });
      }
    }
    const w: Waiter = { resolve: noop, verdict: undefined, sub };
    const outcome = l.buf.offer(seq, w);
    if (outcome === 'full') return delivery.nack({ delayMs: overflowDelayMs, error: 'reorder buffer full' });
    if (outcome === 'duplicate') return decide(ctx, next, l, seq, DUPLICATE);
    const early = seq > l.buf.expected;
    if (early) {
      l.fresh = false;
      // The gap clock starts when the lane starts holding (or at its last progress, see run).
      if (l.buf.held === 1) l.since = clock.now();
      countHeld(sub, 1);
      startTimer();
    }
    pump(l);
    if (w.verdict === undefined) return waitTurn(ctx, next, l, seq, w, early);
    if (early) countHeld(sub, -1);
    return decide(ctx, next, l, seq, w.verdict);
  };

  /** Waits (without a concurrency slot) until the message's lane gives it a verdict. */
  const waitTurn = async (
    ctx: ConsumeContext,
    next: Next,
    l: Lane,
    seq: number,
    w: Waiter,
    early: boolean,
  ): Promise<void> => {
    let verdict: Verdict;
    try {
      verdict = await ctx.wait(
        new Promise<Verdict>((resolve) => {
          w.resolve = resolve;
        }),
      );
    } catch (err) {
      // The subscription is closing: give the place up (and the turn, if it was ours).
      l.buf.remove(seq, w);
      if (w.verdict?.kind === 'run') {
        l.running = false;
        pump(l);
      } else settle(w, DUPLICATE);
      // Put back at once (not after a retry backoff): nothing failed.
      await ctx.delivery.nack({ delayMs: 0, error: describeError(err) });
      return;
    } finally {
      if (early) countHeld(w.sub, -1);
    }
    return decide(ctx, next, l, seq, verdict);
  };

  /** Acts on a message's verdict: runs it, dead-letters it, or acks it as a duplicate. */
  const decide = (ctx: ConsumeContext, next: Next, l: Lane, seq: number, verdict: Verdict): Promise<void> => {
    if (verdict.kind === 'run') return run(ctx, l, seq, next);
    if (verdict.kind === 'dead-letter') return ctx.delivery.deadLetter(verdict.reason, { error: verdict.error });
    // Below the expected sequence: handled already, unless its gap was given up on.
    if (seq < l.buf.expected) return lateOrDuplicate(ctx, l.workflowId, seq);
    ctx.state.set('sequencing', 'duplicate');
    return HANDLED_SYNC;
  };

  const lateOrDuplicate = async (ctx: ConsumeContext, wf: string, seq: number): Promise<void> => {
    if (await store.takeSkipped(ctx.group, wf, seq)) {
      await ctx.delivery.deadLetter(SequencingReason.late, {
        error: `workflow ${wf}: sequence ${seq} arrived after its gap was released`,
      });
      return;
    }
    ctx.state.set('sequencing', 'duplicate');
  };

  // Not async: an envelope that needs no number costs no promise of its own.
  const publish = (ctx: PublishContext, next: Next): Promise<void> => {
    const env = ctx.envelope;
    if (!o.assign || env.workflowid === undefined || env.sequence !== undefined) return next();
    const local = localOps(store);
    if (local) {
      // withAttributes, without its argument object
      ctx.envelope = Object.freeze({ ...env, sequence: local.nextSequence(env.workflowid) });
      return next();
    }
    return store.nextSequence(env.workflowid).then((sequence) => {
      ctx.envelope = withAttributes(env, { sequence });
      return next();
    });
  };

  return {
    name: 'sequencing',
    publish,
    consume,
    gaps: () => [...recentGaps],
    held: () => totalHeld,
    async skip(group, workflowId) {
      const b = await store.blocked(group, workflowId);
      if (!b) return false;
      if (b.sequence !== undefined) await store.advance(group, workflowId, b.sequence);
      await store.unblock(group, workflowId);
      const l = lanes.get(laneKey(group, workflowId));
      if (l && !l.running) {
        release(l.buf.moveTo(b.sequence === undefined ? 0 : b.sequence + 1), DUPLICATE);
        pump(l);
      }
      return true;
    },
    close() {
      if (timer) clearInterval(timer);
      timer = undefined;
    },
  };
}

function blockedError(workflowId: string, b: WorkflowBlock): string {
  const seq = b.sequence === undefined ? '' : ` (sequence ${b.sequence})`;
  return `workflow ${workflowId} is blocked by dead-lettered message ${b.messageId}${seq}: ${b.reason}; replay it or skip the block`;
}
