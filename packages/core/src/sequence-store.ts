import { positiveInteger } from './validate.js';

/** Why a workflow is blocked: the dead letter it waits for (order-preserving dead letters). */
export interface WorkflowBlock {
  /** Id of the dead-lettered message (the envelope id). */
  readonly messageId: string;
  /** Its sequence number, if it had one. */
  readonly sequence?: number | undefined;
  /** The dead-letter reason. */
  readonly reason: string;
  readonly atMs: number;
}

export interface BlockedWorkflow {
  readonly group: string;
  readonly workflowId: string;
  readonly block: WorkflowBlock;
}

/**
 * Durable per-workflow state for the sequencing and order-preserving dead-letter middleware:
 * the publish-side counter of each workflow, and per consumer group the next sequence expected,
 * the ranges given up on after a gap timeout, and blocks. A store shared by several processes
 * (SQLite file, Redis) lets them cooperate on the same workflows.
 */
export interface SequenceStore {
  /** Publish side: the next sequence number of a workflow (1, 2, 3 …); a restart continues it. */
  nextSequence(workflowId: string): Promise<number>;
  /** The next sequence `group` expects for a workflow (1 when it has seen none). */
  expected(group: string, workflowId: string): Promise<number>;
  /** Records `seq` as processed: expected becomes at least `seq + 1`. Resolves with the new expected. */
  advance(group: string, workflowId: string, seq: number): Promise<number>;
  /** Gives up on `from`…`to` (a gap): remembers the range and moves expected past it. */
  skip(group: string, workflowId: string, from: number, to: number): Promise<void>;
  /** Whether `seq` was given up on; if so it is forgotten (it arrived late and is being dealt with). */
  takeSkipped(group: string, workflowId: string, seq: number): Promise<boolean>;
  block(group: string, workflowId: string, block: WorkflowBlock): Promise<void>;
  blocked(group: string, workflowId: string): Promise<WorkflowBlock | undefined>;
  /** Lifts a block; resolves with whether there was one. */
  unblock(group: string, workflowId: string): Promise<boolean>;
  listBlocked(group?: string): Promise<BlockedWorkflow[]>;
}

export interface MemorySequenceStoreOptions {
  /** Workflows remembered at most per map; the least recently used go first (default 100,000). Blocks are never evicted. */
  readonly maxWorkflows?: number;
}

/** Removes `seq` from a list of inclusive ranges; returns whether it was in one. */
export function takeFromRanges(ranges: [number, number][], seq: number): boolean {
  const i = ranges.findIndex(([from, to]) => seq >= from && seq <= to);
  if (i < 0) return false;
  const [from, to] = ranges[i] as [number, number];
  const parts: [number, number][] = [];
  if (from <= seq - 1) parts.push([from, seq - 1]);
  if (seq + 1 <= to) parts.push([seq + 1, to]);
  ranges.splice(i, 1, ...parts);
  return true;
}

/**
 * Where the memory store keeps the synchronous versions of its hot-path methods, for the
 * sequencing middleware to call instead of awaiting a promise per message: a function of the
 * store that gives them only while the store's methods are still its own. A registered symbol
 * rather than an export, so it is no public API; not enumerable, so a copy of the store
 * (`{ ...store }`) is used through its methods.
 */
const LOCAL_OPS = Symbol.for('agentbus.localSequenceOps');

/**
 * What memorySequenceStore keeps under {@link LOCAL_OPS} (sequencing.ts reads it). `key` is
 * `<group>\u0000<workflowId>`, as the store keys its per-group maps and sequencing its lanes, so
 * that it is built once per message.
 */
type LocalSequenceOps = (store: SequenceStore) =>
  | {
      nextSequence(workflowId: string): number;
      expected(key: string): number;
      advance(key: string, seq: number): number;
    }
  | undefined;

/** An in-process sequence store (state is lost with the process; for tests and single-process buses). */
export function memorySequenceStore(options: MemorySequenceStoreOptions = {}): SequenceStore {
  const maxWorkflows = positiveInteger(options.maxWorkflows ?? 100_000, 'maxWorkflows');
  const counters = new Map<string, number>();
  const expected = new Map<string, number>();
  const skipped = new Map<string, [number, number][]>();
  const blocks = new Map<string, BlockedWorkflow>();
  const key = (group: string, wf: string) => `${group}\u0000${wf}`;
  // Per map, one iterator for all evictions: a fresh one per eviction would step over every
  // entry deleted (re-inserted) since the map's last rehash, each time. Live entries are all ahead
  // of it: what it passed was evicted, and a touched key goes to the end.
  const oldestFirst = new Map<Map<string, unknown>, MapIterator<string>>();
  const touch = <V>(m: Map<string, V>, k: string, v: V) => {
    m.delete(k);
    m.set(k, v);
    if (m.size <= maxWorkflows) return;
    let r = oldestFirst.get(m)?.next();
    if (r === undefined || r.done) {
      const it = m.keys();
      oldestFirst.set(m, it);
      r = it.next();
    }
    m.delete(r.value as string);
  };
  const local = {
    nextSequence(wf: string): number {
      const n = (counters.get(wf) ?? 0) + 1;
      touch(counters, wf, n);
      return n;
    },
    expected(k: string): number {
      return expected.get(k) ?? 1;
    },
    advance(k: string, seq: number): number {
      const n = Math.max(expected.get(k) ?? 1, seq + 1);
      touch(expected, k, n);
      return n;
    },
  };
  const store: SequenceStore = {
    async nextSequence(wf) {
      return local.nextSequence(wf);
    },
    async expected(group, wf) {
      return local.expected(key(group, wf));
    },
    async advance(group, wf, seq) {
      return local.advance(key(group, wf), seq);
    },
    async skip(group, wf, from, to) {
      const k = key(group, wf);
      const list = skipped.get(k) ?? [];
      list.push([from, to]);
      touch(skipped, k, list);
      touch(expected, k, Math.max(expected.get(k) ?? 1, to + 1));
    },
    async takeSkipped(group, wf, seq) {
      const list = skipped.get(key(group, wf));
      return list !== undefined && takeFromRanges(list, seq);
    },
    async block(group, wf, block) {
      blocks.set(key(group, wf), { group, workflowId: wf, block });
    },
    async blocked(group, wf) {
      return blocks.get(key(group, wf))?.block;
    },
    async unblock(group, wf) {
      return blocks.delete(key(group, wf));
    },
    async listBlocked(group) {
      return [...blocks.values()].filter((b) => group === undefined || b.group === group);
    },
  };
  const own = { nextSequence: store.nextSequence, expected: store.expected, advance: store.advance };
  const localOps: LocalSequenceOps = (s) =>
    s.nextSequence === own.nextSequence && s.expected === own.expected && s.advance === own.advance ? local : undefined;
  Object.defineProperty(store, LOCAL_OPS, { value: localOps });
  return store;
}
