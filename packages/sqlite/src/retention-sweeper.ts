import { MAX_PRIORITY } from '@agentbus/core';
import type { SqliteRetentionOptions } from './options.js';
import type { SqliteStore } from './sqlite-store.js';

/** Rows deleted per transaction, so that other processes get the write lock in between. */
const DELETE_BATCH = 2000;
/** Messages looked at per step when searching for settled ones among live ones. */
const HOLE_WINDOW = 5000;
const NO_LIMIT = Number.MAX_SAFE_INTEGER;

/** The outcome of one bounded unit of sweeping. */
export interface SweepStep {
  readonly deleted: number;
  /** Whether another step would find more to do. */
  readonly more: boolean;
}

/**
 * Deletes the messages that no delivery row refers to any more and that retention does not keep.
 * Messages are deleted in seq order, and seq follows publish time, so retention is a seq bound:
 * everything below it and below the oldest live delivery goes as one range (cheap, whole pages
 * freed); settled messages above the oldest live delivery (settled out of order) are found by
 * scanning in bounded windows. Work is split into steps so the background sweep can yield.
 */
export class RetentionSweeper {
  readonly #store: SqliteStore;
  readonly #maxAgeMs: number;
  readonly #maxMessages: number;
  /** Where the window scan of the current pass continues; 0 = a new pass. */
  #cursor = 0;
  readonly #oldestLive;
  readonly #seqAtOrAfter;
  readonly #lastSeq;
  readonly #nthNewest;
  readonly #windowEnd;
  readonly #deleteBelow;
  readonly #deleteUnreferenced;

  constructor(store: SqliteStore, retention: Required<SqliteRetentionOptions>) {
    this.#store = store;
    this.#maxAgeMs = retention.maxAgeMs;
    this.#maxMessages = retention.maxMessages;
    const db = store.db;
    // The oldest delivery row of each (group, priority): a primary-key seek each, no index by seq needed.
    this.#oldestLive = db
      .prepare<[], number | null>(
        `WITH RECURSIVE p(v) AS (SELECT 0 UNION ALL SELECT v + 1 FROM p WHERE v < ${MAX_PRIORITY})
         SELECT min((SELECT d.seq FROM deliveries d WHERE d.group_name = g.group_name AND d.priority = p.v
                     ORDER BY d.seq LIMIT 1))
         FROM (SELECT DISTINCT group_name FROM groups) g CROSS JOIN p`,
      )
      .pluck();
    this.#seqAtOrAfter = db.prepare<[number], { seq: number; published_at: number }>(
      'SELECT seq, published_at FROM messages WHERE seq >= ? ORDER BY seq LIMIT 1',
    );
    this.#lastSeq = db.prepare<[], number | null>('SELECT max(seq) FROM messages').pluck();
    this.#nthNewest = db
      .prepare<[number], number>('SELECT seq FROM messages ORDER BY seq DESC LIMIT 1 OFFSET ?')
      .pluck();
    this.#windowEnd = db
      .prepare<[number, number], number>('SELECT seq FROM messages WHERE seq >= ? ORDER BY seq LIMIT 1 OFFSET ?')
      .pluck();
    this.#deleteBelow = db.prepare<[number, number]>(
      'DELETE FROM messages WHERE seq IN (SELECT seq FROM messages WHERE seq < ? ORDER BY seq LIMIT ?)',
    );
    this.#deleteUnreferenced = db.prepare<[number, number]>(
      `DELETE FROM messages WHERE seq >= ? AND seq < ?
         AND NOT EXISTS (SELECT 1 FROM groups g CROSS JOIN deliveries d
                         ON d.group_name = g.group_name AND d.priority = messages.priority AND d.seq = messages.seq)`,
    );
  }

  /** A complete pass; returns the number of messages deleted. */
  sweep(now: number): number {
    this.#cursor = 0;
    let deleted = 0;
    for (;;) {
      const step = this.step(now);
      deleted += step.deleted;
      if (!step.more) return deleted;
    }
  }

  /** One bounded unit of work: one delete batch, or one window of the search for out-of-order settled messages. */
  step(now: number): SweepStep {
    // The bounds are read in the same IMMEDIATE transaction as the delete: read outside it, a
    // publish by another process in between would not be seen as live and would be deleted.
    const first = this.#store.immediate(() => {
      const limit = Math.max(this.#ageLimit(now), this.#countLimit());
      if (limit <= 0) return undefined;
      const oldestLive = this.#oldestLive.get() ?? NO_LIMIT;
      const deleted = this.#deleteBelow.run(Math.min(limit, oldestLive), DELETE_BATCH).changes;
      return { limit, oldestLive, deleted };
    });
    if (!first) return { deleted: 0, more: false };
    const { limit, oldestLive, deleted: below } = first;
    if (below === DELETE_BATCH) return { deleted: below, more: true };
    const from = Math.max(this.#cursor, oldestLive);
    if (from >= limit) {
      this.#cursor = 0;
      return { deleted: below, more: false };
    }
    const to = Math.min(this.#windowEnd.get(from, HOLE_WINDOW) ?? NO_LIMIT, limit);
    // Safe outside the first transaction: it only deletes messages no delivery row refers to.
    const holes = this.#store.immediate(() => this.#deleteUnreferenced.run(from, to).changes);
    const more = to < limit;
    this.#cursor = more ? to : 0;
    return { deleted: below + holes, more };
  }

  /** Messages below this seq are older than `maxAgeMs` (0: none are). */
  #ageLimit(now: number): number {
    if (this.#maxAgeMs === 0) return NO_LIMIT;
    if (!Number.isFinite(this.#maxAgeMs)) return 0;
    const cutoff = now - this.#maxAgeMs;
    // Binary search over seq for the first message published after the cutoff: O(log n) lookups
    // however much old-but-unsettled backlog there is.
    const first = this.#seqAtOrAfter.get(0);
    if (!first || first.published_at > cutoff) return 0;
    const last = this.#lastSeq.get() ?? 0;
    if ((this.#seqAtOrAfter.get(last)?.published_at ?? 0) <= cutoff) return last + 1;
    // Invariant: the row at `old` is old, the row at `young` is young, and no row lies in [top, young).
    let old = first.seq;
    let young = last;
    let top = young;
    while (top - old > 1) {
      const probe = this.#seqAtOrAfter.get(Math.floor((old + top) / 2));
      if (!probe || probe.seq >= young) top = Math.floor((old + top) / 2);
      else if (probe.published_at <= cutoff) old = probe.seq;
      else top = young = probe.seq;
    }
    return young;
  }

  /** Messages below this seq are beyond the newest `maxMessages` (0: none are). */
  #countLimit(): number {
    if (!Number.isFinite(this.#maxMessages)) return 0;
    const oldestDropped = this.#nthNewest.get(this.#maxMessages);
    return oldestDropped === undefined ? 0 : oldestDropped + 1;
  }
}
