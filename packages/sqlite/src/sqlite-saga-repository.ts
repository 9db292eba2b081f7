import { type SagaRepository, type SagaState, sagaFilterLimit, sagaFilterStatuses } from '@agentbus/core';
import { openStoreDatabase } from './open-store-database.js';

export interface SqliteSagaRepositoryOptions {
  /** The database file (it may be the transport's own: the repository keeps a table of its own). */
  readonly path: string;
  readonly busyTimeoutMs?: number;
}

/** A SQLite saga repository with its close(), so a process can let go of the file. */
export interface SqliteSagaRepository extends SagaRepository {
  close(): void;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS agentbus_saga (
  id TEXT PRIMARY KEY, name TEXT NOT NULL, status TEXT NOT NULL, version INTEGER NOT NULL,
  created_at_ms INTEGER NOT NULL, updated_at_ms INTEGER NOT NULL, state TEXT NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS agentbus_saga_status ON agentbus_saga (status, created_at_ms, id);
`;

/**
 * Saga state on SQLite: one row per saga in table `agentbus_saga` (the state as JSON, with its
 * status, name and version in columns). `save` is one UPDATE … WHERE version = previous, so of two
 * processes sharing the file only one advances a saga.
 */
export function sqliteSagaRepository(options: SqliteSagaRepositoryOptions): SqliteSagaRepository {
  const db = openStoreDatabase(options);
  db.exec(SCHEMA);
  type Row = [string, string, string, number, number, number, string];
  const insert = db.prepare<Row>(
    'INSERT INTO agentbus_saga (id, name, status, version, created_at_ms, updated_at_ms, state) VALUES (?, ?, ?, ?, ?, ?, ?) ' +
      'ON CONFLICT (id) DO NOTHING',
  );
  const update = db.prepare<[string, number, number, string, string, number]>(
    'UPDATE agentbus_saga SET status = ?, version = ?, updated_at_ms = ?, state = ? WHERE id = ? AND version = ?',
  );
  const getOne = db.prepare<[string], { state: string }>('SELECT state FROM agentbus_saga WHERE id = ?');
  const remove = db.prepare<[string]>('DELETE FROM agentbus_saga WHERE id = ?');
  const row = (s: SagaState): Row => [
    s.id,
    s.name,
    s.status,
    s.version,
    s.createdAtMs,
    s.updatedAtMs,
    JSON.stringify(s),
  ];
  return {
    async create(state) {
      return insert.run(...row(state)).changes > 0;
    },
    async get(id) {
      const r = getOne.get(id);
      return r && (JSON.parse(r.state) as SagaState);
    },
    async save(state) {
      const r = update.run(
        state.status,
        state.version,
        state.updatedAtMs,
        JSON.stringify(state),
        state.id,
        state.version - 1,
      );
      return r.changes > 0;
    },
    async list(filter) {
      const statuses = sagaFilterStatuses(filter);
      const limit = sagaFilterLimit(filter);
      const where: string[] = [];
      const params: (string | number)[] = [];
      if (statuses !== undefined) {
        if (statuses.length === 0) return [];
        where.push(`status IN (${statuses.map(() => '?').join(', ')})`);
        params.push(...statuses);
      }
      if (filter?.name) {
        where.push('name = ?');
        params.push(filter.name);
      }
      const sql =
        `SELECT state FROM agentbus_saga${where.length ? ` WHERE ${where.join(' AND ')}` : ''} ` +
        `ORDER BY created_at_ms, id${limit === undefined ? '' : ' LIMIT ?'}`;
      if (limit !== undefined) params.push(limit);
      return db
        .prepare<(string | number)[], { state: string }>(sql)
        .all(...params)
        .map((r) => JSON.parse(r.state) as SagaState);
    },
    async delete(id) {
      return remove.run(id).changes > 0;
    },
    close() {
      db.close();
    },
  };
}
