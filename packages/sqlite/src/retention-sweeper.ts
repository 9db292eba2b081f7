import type { SqliteRetentionOptions } from './options.js';
import type { SqliteStore } from './sqlite-store.js';

/** Rows deleted per transaction, so that other processes get the write lock in between. */
const SWEEP_BATCH = 2000;

/**
 * Deletes settled messages (no delivery row refers to them any more) that retention no longer
 * keeps. Candidates come from a partial index over settled rows, so a sweep costs what it
 * deletes, not the size of the backlog.
 */
export class RetentionSweeper {
  readonly #store: SqliteStore;
  readonly #maxAgeMs: number;
  readonly #maxMessages: number;
  readonly #firstYoung;
  readonly #nthNewest;
  readonly #deleteBelow;

  constructor(store: SqliteStore, retention: Required<SqliteRetentionOptions>) {
    this.#store = store;
    this.#maxAgeMs = retention.maxAgeMs;
    this.#maxMessages = retention.maxMessages;
    const db = store.db;
    this.#firstYoung = db
      .prepare<[number], number>('SELECT seq FROM messages WHERE refs = 0 AND published_at > ? ORDER BY seq LIMIT 1')
      .pluck();
    this.#nthNewest = db
      .prepare<[number], number>('SELECT seq FROM messages WHERE refs = 0 ORDER BY seq DESC LIMIT 1 OFFSET ?')
      .pluck();
    this.#deleteBelow = db.prepare<[number, number]>(
      'DELETE FROM messages WHERE seq IN (SELECT seq FROM messages WHERE refs = 0 AND seq < ? ORDER BY seq LIMIT ?)',
    );
  }

  /** Deletes what retention no longer keeps; returns the number of messages deleted. */
  sweep(now: number): number {
    const limit = Math.max(this.#ageLimit(now), this.#countLimit());
    if (limit <= 0) return 0;
    let deleted = 0;
    for (;;) {
      const n = this.#store.immediate(() => this.#deleteBelow.run(limit, SWEEP_BATCH).changes);
      deleted += n;
      if (n < SWEEP_BATCH) return deleted;
    }
  }

  /** Settled messages below this seq are past `maxAgeMs`. */
  #ageLimit(now: number): number {
    if (!Number.isFinite(this.#maxAgeMs)) return 0;
    // seq follows publish time, so the first young row bounds the old ones; only rows about to be deleted are scanned.
    return this.#firstYoung.get(now - this.#maxAgeMs) ?? Number.MAX_SAFE_INTEGER;
  }

  /** Settled messages below this seq are beyond the newest `maxMessages`. */
  #countLimit(): number {
    if (!Number.isFinite(this.#maxMessages)) return 0;
    const oldestDropped = this.#nthNewest.get(this.#maxMessages);
    return oldestDropped === undefined ? 0 : oldestDropped + 1;
  }
}
