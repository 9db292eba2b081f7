import { mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { ConfigError, topicMatches } from '@agentbus/core';
import Database from 'better-sqlite3';
import type { ResolvedSqliteOptions } from './options.js';

/** Stored in `PRAGMA user_version`; bumped with every incompatible schema change. */
export const SCHEMA_VERSION = 1;

/**
 * Columns added since a table was first created. Each is nullable and unknown to older versions,
 * which keep working with it (they name their columns): a compatible change, so no version bump.
 * Files created before a column existed get it when a newer version opens them.
 */
const ADDED_COLUMNS: readonly { readonly table: string; readonly column: string; readonly type: string }[] = [
  { table: 'deliveries', column: 'last_error', type: 'TEXT' },
  { table: 'groups', column: 'ephemeral_until', type: 'INTEGER' },
];

/**
 * The schema. Every statement is idempotent so that several processes may open a fresh file at
 * the same time.
 *
 * - `messages` holds each published message once. Settling never touches it (a message row is
 *   large, rewriting its page per ack is what would cost); the retention sweep deletes the rows no
 *   delivery refers to, mostly as one range below the oldest live delivery. `seq` is a plain
 *   rowid: a new row always gets a seq above every live one, which is all ordering needs, and
 *   AUTOINCREMENT would dirty one more page per commit.
 * - `deliveries` holds one row per (group, message) not yet settled. Its primary key is the claim
 *   order, so claiming walks the b-tree in order. `ready_at` is when the row may be claimed (now,
 *   after a nack delay, or when a lease runs out); `token` identifies the current lease so that a
 *   settle from a lost lease has no effect. There is deliberately no index by seq: it would cost
 *   every publish and ack, while the sweep can ask each (group, priority) prefix of the key.
 *   `last_error` is the error of the nack that made the row ready again (cut to 1 KiB), shown
 *   as the next delivery's `lastError`; a claim clears it, so a lease that runs out leaves none.
 * - `dead_letters` keeps its own copy of the message, so retention never touches it.
 * - `groups` holds each group's patterns. `ephemeral_until` is NULL for a durable group; for an
 *   ephemeral one, the time its subscription last promised to renew it by (see SqliteGroups). An
 *   older version ignores the column and treats such a group as durable.
 */
const DDL = `
CREATE TABLE IF NOT EXISTS messages (
  seq INTEGER PRIMARY KEY,
  id TEXT NOT NULL,
  topic TEXT NOT NULL,
  body BLOB NOT NULL,
  headers TEXT NOT NULL,
  priority INTEGER NOT NULL,
  expires_at INTEGER,
  published_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS groups (
  group_name TEXT NOT NULL,
  pattern TEXT NOT NULL,
  declared_at INTEGER NOT NULL,
  ephemeral_until INTEGER,
  PRIMARY KEY (group_name, pattern)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS deliveries (
  group_name TEXT NOT NULL,
  priority INTEGER NOT NULL,
  seq INTEGER NOT NULL,
  attempt INTEGER NOT NULL,
  ready_at INTEGER NOT NULL,
  token INTEGER,
  last_error TEXT,
  PRIMARY KEY (group_name, priority DESC, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dead_letters (
  id TEXT PRIMARY KEY,
  group_name TEXT NOT NULL,
  reason TEXT NOT NULL,
  error TEXT,
  attempts INTEGER NOT NULL,
  dead_lettered_at INTEGER NOT NULL,
  msg_id TEXT NOT NULL,
  topic TEXT NOT NULL,
  body BLOB NOT NULL,
  headers TEXT NOT NULL,
  priority INTEGER NOT NULL,
  expires_at INTEGER,
  published_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_order ON dead_letters (dead_lettered_at, id);
CREATE TABLE IF NOT EXISTS health (
  id INTEGER PRIMARY KEY,
  checked_at INTEGER NOT NULL
);
`;

function schemaVersion(db: Database.Database): number {
  const version = db.pragma('user_version', { simple: true }) as number;
  if (version > SCHEMA_VERSION) {
    throw new ConfigError(
      `the database has schema version ${version}; this @agentbus/sqlite understands up to ${SCHEMA_VERSION}`,
      { path: 'path' },
    );
  }
  return version;
}

function missingColumns(db: Database.Database): typeof ADDED_COLUMNS {
  return ADDED_COLUMNS.filter(
    (c) => !(db.pragma(`table_info(${c.table})`) as { name: string }[]).some((col) => col.name === c.column),
  );
}

function migrate(db: Database.Database): void {
  if (schemaVersion(db) === SCHEMA_VERSION && missingColumns(db).length === 0) return;
  db.transaction(() => {
    // Looked at again under the write lock: another process may have migrated the file meanwhile.
    if (schemaVersion(db) < SCHEMA_VERSION) {
      db.exec(DDL);
      db.pragma(`user_version = ${SCHEMA_VERSION}`);
    }
    for (const c of missingColumns(db)) db.exec(`ALTER TABLE ${c.table} ADD COLUMN ${c.column} ${c.type}`);
  }).immediate();
}

/**
 * Opens (creating when needed) the database: WAL journal, busy timeout, the `topic_matches`
 * SQL function and the schema.
 */
export function openDatabase(options: ResolvedSqliteOptions): Database.Database {
  const { path } = options;
  if (path !== ':memory:') mkdirSync(dirname(resolve(path)), { recursive: true });
  const db = new Database(path, { timeout: options.busyTimeoutMs });
  try {
    db.pragma(`busy_timeout = ${options.busyTimeoutMs}`);
    // Only takes effect while the file is still empty (before WAL mode and the schema create it).
    db.pragma(`page_size = ${options.pageSize}`);
    db.pragma('journal_mode = WAL');
    db.pragma(`synchronous = ${options.synchronous === 'full' ? 'FULL' : 'NORMAL'}`);
    // Routing runs inside SQL so that groups declared by other processes count at once.
    db.function('topic_matches', { deterministic: true }, (pattern: unknown, topic: unknown) =>
      topicMatches(String(pattern), String(topic)) ? 1 : 0,
    );
    migrate(db);
  } catch (err) {
    db.close();
    throw err;
  }
  return db;
}
