import {
  type CheckpointStore,
  createEventStore,
  type EventStore,
  type EventStoreEngine,
  type EventStoreOptions,
  type PendingEvent,
  type StoredEvent,
} from '@agentbus/core';
import { toBusError } from './db-errors.js';
import { openStoreDatabase } from './open-store-database.js';

export interface SqliteEventStoreOptions extends EventStoreOptions {
  /** The database file (it may be the transport's own: the store keeps tables of its own). */
  readonly path: string;
  /** How long a write waits for another connection's lock before it fails (retryable). */
  readonly busyTimeoutMs?: number;
}

/** An event store in a SQLite file, with its checkpoints in the same file. */
export interface SqliteEventStore extends EventStore {
  readonly checkpoints: CheckpointStore;
}

interface Row {
  position: number;
  stream: string;
  version: number;
  id: string;
  type: string;
  data: string;
  metadata: string;
  time: string;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS agentbus_es_events (
  position INTEGER PRIMARY KEY AUTOINCREMENT,
  stream TEXT NOT NULL,
  version INTEGER NOT NULL,
  id TEXT NOT NULL,
  type TEXT NOT NULL,
  data TEXT NOT NULL,
  metadata TEXT NOT NULL,
  time TEXT NOT NULL,
  UNIQUE (stream, version));
CREATE TABLE IF NOT EXISTS agentbus_es_checkpoints (name TEXT PRIMARY KEY, position INTEGER NOT NULL) WITHOUT ROWID;
`;

function stored(r: Row): StoredEvent {
  return {
    streamId: r.stream,
    version: r.version,
    position: r.position,
    id: r.id,
    type: r.type,
    data: JSON.parse(r.data),
    metadata: JSON.parse(r.metadata),
    time: r.time,
  };
}

/**
 * An event store in a SQLite file (WAL): one table `agentbus_es_events` with a global
 * AUTOINCREMENT position and a unique (stream, version); an append checks the version and inserts
 * in one IMMEDIATE transaction, so processes sharing the file never both win, and positions are
 * committed in order. Checkpoints live in `agentbus_es_checkpoints`. A subscription sees appends
 * made through this store at once, those of other connections or processes within `pollIntervalMs`.
 */
export function sqliteEventStore(options: SqliteEventStoreOptions): SqliteEventStore {
  const db = openStoreDatabase(options);
  // An append resolves once it is on disk.
  db.pragma('synchronous = FULL');
  db.exec(SCHEMA);

  const versionOf = db.prepare<[string], { v: number | null }>(
    'SELECT max(version) AS v FROM agentbus_es_events WHERE stream = ?',
  );
  const insert = db.prepare<[string, number, string, string, string, string, string]>(
    'INSERT INTO agentbus_es_events (stream, version, id, type, data, metadata, time) VALUES (?, ?, ?, ?, ?, ?, ?)',
  );
  const byStream = db.prepare<[string, number, number], Row>(
    'SELECT * FROM agentbus_es_events WHERE stream = ? AND version >= ? ORDER BY version LIMIT ?',
  );
  const byPosition = db.prepare<[number, number], Row>(
    'SELECT * FROM agentbus_es_events WHERE position >= ? ORDER BY position LIMIT ?',
  );
  const head = db.prepare<[], { p: number | null }>('SELECT max(position) AS p FROM agentbus_es_events');
  const loadCheckpoint = db.prepare<[string], { position: number }>(
    'SELECT position FROM agentbus_es_checkpoints WHERE name = ?',
  );
  const saveCheckpoint = db.prepare<[string, number]>(
    'INSERT INTO agentbus_es_checkpoints (name, position) VALUES (?, ?) ' +
      'ON CONFLICT (name) DO UPDATE SET position = excluded.position',
  );

  const append = db.transaction((streamId: string, events: readonly PendingEvent[], expected: number | undefined) => {
    const current = versionOf.get(streamId)?.v ?? 0;
    if (expected !== undefined && current !== expected) return { ok: false as const, actualVersion: current };
    const positions = events.map((e, i) =>
      Number(
        insert.run(streamId, current + i + 1, e.id, e.type, e.json, JSON.stringify(e.metadata), e.time).lastInsertRowid,
      ),
    );
    return { ok: true as const, versionBefore: current, positions };
  });

  const sync = <R>(operation: string, f: () => R): Promise<R> => {
    try {
      return Promise.resolve(f());
    } catch (err) {
      return Promise.reject(toBusError(err, operation));
    }
  };

  const engine: EventStoreEngine = {
    append: (streamId, events, expected) => sync('event append', () => append.immediate(streamId, events, expected)),
    readStream: (streamId, from, max) => sync('event read', () => byStream.all(streamId, from, max).map(stored)),
    readAll: (from, max) => sync('event read', () => byPosition.all(from, max).map(stored)),
    version: (streamId) => sync('event version', () => versionOf.get(streamId)?.v ?? 0),
    head: () => sync('event head', () => head.get()?.p ?? 0),
    close() {
      db.close();
    },
  };
  const checkpoints: CheckpointStore = {
    load: (name) => sync('checkpoint load', () => loadCheckpoint.get(name)?.position ?? 0),
    save: (name, position) =>
      sync('checkpoint save', () => {
        saveCheckpoint.run(name, position);
      }),
  };
  return Object.assign(createEventStore(engine, options), { checkpoints });
}
