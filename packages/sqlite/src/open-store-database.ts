import { mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { ConfigError, positiveNumber } from '@agentbus/core';
import Database from 'better-sqlite3';

/** What every SQLite store (idempotency, sequences, sagas, events) takes to open its file. */
export interface StoreDatabaseOptions {
  /** The database file (it may be the transport's own: each store keeps tables of its own), or ":memory:". */
  readonly path: string;
  readonly busyTimeoutMs?: number;
}

/** Opens (creating its folder) a store's database in WAL mode; validates `path` and `busyTimeoutMs`. */
export function openStoreDatabase(options: StoreDatabaseOptions): Database.Database {
  if (typeof options?.path !== 'string' || options.path === '') {
    throw new ConfigError('must be a file path or ":memory:"', { path: 'path' });
  }
  const busyTimeoutMs = positiveNumber(options.busyTimeoutMs ?? 5_000, 'busyTimeoutMs');
  if (options.path !== ':memory:') mkdirSync(dirname(resolve(options.path)), { recursive: true });
  const db = new Database(options.path, { timeout: busyTimeoutMs });
  db.pragma('journal_mode = WAL');
  return db;
}
