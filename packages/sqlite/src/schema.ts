import { mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { ConfigError, topicMatches } from '@agentbus/core';
import Database from 'better-sqlite3';
import type { ResolvedSqliteOptions } from './options.js';

/** Stored in `PRAGMA user_version`; bumped with every incompatible schema change. */
export const SCHEMA_VERSION = 1;

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
 * - `dead_letters` keeps its own copy of the message, so retention never touches it.
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
  PRIMARY KEY (group_name, pattern)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS deliveries (
  group_name TEXT NOT NULL,
  priority INTEGER NOT NULL,
  seq INTEGER NOT NULL,
  attempt INTEGER NOT NULL,
  ready_at INTEGER NOT NULL,
  token INTEGER,
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

function migrate(db: Database.Database): void {
  const version = db.pragma('user_version', { simple: true }) as number;
  if (version > SCHEMA_VERSION) {
    throw new ConfigError(
      `the database has schema version ${version}; this @agentbus/sqlite understands up to ${SCHEMA_VERSION}`,
      { path: 'path' },
    );
  }
  if (version === SCHEMA_VERSION) return;
  db.transaction(() => {
    db.exec(DDL);
    db.pragma(`user_version = ${SCHEMA_VERSION}`);
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
