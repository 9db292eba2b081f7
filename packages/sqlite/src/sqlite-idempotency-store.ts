import { type Clock, type IdempotencyState, type IdempotencyStore, positiveNumber, systemClock } from '@agentbus/core';
import type Database from 'better-sqlite3';
import { openStoreDatabase } from './open-store-database.js';

export interface SqliteIdempotencyStoreOptions {
  /** The database file (it may be the transport's own: the store keeps a table of its own). */
  readonly path: string;
  readonly busyTimeoutMs?: number;
  /** Expired keys are deleted every this many writes (default 1,000). */
  readonly sweepEvery?: number;
  readonly clock?: Clock;
}

/** A SQLite idempotency store with its close(), so a process can let go of the file. */
export interface SqliteIdempotencyStore extends IdempotencyStore {
  /**
   * Runs `fn` on the store's connection in one IMMEDIATE transaction that also marks `done.key`
   * as processed: a side effect written to the same database file and its completion commit
   * together, so a crash between them cannot make a redelivery repeat the effect (outbox style).
   * `fn` must be synchronous (better-sqlite3 transactions are). Key: `idempotencyKey(group, envelope)`.
   */
  transaction<T>(fn: (db: Database.Database) => T, done?: { readonly key: string; readonly ttlMs: number }): T;
  close(): void;
}

/**
 * The dedup middleware's store on SQLite: table `agentbus_idempotency (key, state, until_ms)`;
 * `begin` claims a key in one IMMEDIATE transaction, so concurrent processes on the same file
 * never both get 'new'. Survives restarts with the file.
 */
export function sqliteIdempotencyStore(options: SqliteIdempotencyStoreOptions): SqliteIdempotencyStore {
  const db = openStoreDatabase(options);
  const clock = options.clock ?? systemClock;
  const sweepEvery = positiveNumber(options.sweepEvery ?? 1_000, 'sweepEvery');
  db.exec(
    'CREATE TABLE IF NOT EXISTS agentbus_idempotency (key TEXT PRIMARY KEY, state TEXT NOT NULL, until_ms INTEGER NOT NULL) WITHOUT ROWID',
  );
  const get = db.prepare<[string], { state: 'busy' | 'done'; until_ms: number }>(
    'SELECT state, until_ms FROM agentbus_idempotency WHERE key = ?',
  );
  const put = db.prepare<[string, string, number]>(
    'INSERT INTO agentbus_idempotency (key, state, until_ms) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE SET state = excluded.state, until_ms = excluded.until_ms',
  );
  const releaseStmt = db.prepare<[string]>("DELETE FROM agentbus_idempotency WHERE key = ? AND state = 'busy'");
  const sweep = db.prepare<[number]>('DELETE FROM agentbus_idempotency WHERE until_ms <= ?');
  let writes = 0;
  const wrote = () => {
    if (++writes % sweepEvery === 0) sweep.run(clock.now());
  };
  const claim = db.transaction((key: string, leaseMs: number): IdempotencyState => {
    const now = clock.now();
    const row = get.get(key);
    if (row && row.until_ms > now) return row.state;
    put.run(key, 'busy', now + leaseMs);
    return 'new';
  });
  return {
    async begin(key, leaseMs) {
      const state = claim.immediate(key, leaseMs);
      if (state === 'new') wrote();
      return state;
    },
    async complete(key, ttlMs) {
      put.run(key, 'done', clock.now() + ttlMs);
      wrote();
    },
    async release(key) {
      releaseStmt.run(key);
    },
    transaction(fn, done) {
      const tx = db.transaction(() => {
        const result = fn(db);
        if (done) put.run(done.key, 'done', clock.now() + done.ttlMs);
        return result;
      });
      const result = tx.immediate();
      if (done) wrote();
      return result;
    },
    close() {
      db.close();
    },
  };
}
