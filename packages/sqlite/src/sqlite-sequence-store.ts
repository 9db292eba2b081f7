import type { BlockedWorkflow, SequenceStore, WorkflowBlock } from '@agentbus/core';
import { openStoreDatabase } from './open-store-database.js';

export interface SqliteSequenceStoreOptions {
  /** The database file (it may be the transport's own: the store keeps tables of its own). */
  readonly path: string;
  readonly busyTimeoutMs?: number;
}

/** A SQLite sequence store with its close(), so a process can let go of the file. */
export interface SqliteSequenceStore extends SequenceStore {
  close(): void;
}

interface BlockRow {
  grp: string;
  workflow: string;
  message_id: string;
  sequence: number | null;
  reason: string;
  at_ms: number;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS agentbus_seq_counter (workflow TEXT PRIMARY KEY, last INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS agentbus_seq_expected (
  grp TEXT NOT NULL, workflow TEXT NOT NULL, expected INTEGER NOT NULL, PRIMARY KEY (grp, workflow)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS agentbus_seq_skipped (
  grp TEXT NOT NULL, workflow TEXT NOT NULL, from_seq INTEGER NOT NULL, to_seq INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS agentbus_seq_skipped_wf ON agentbus_seq_skipped (grp, workflow);
CREATE TABLE IF NOT EXISTS agentbus_seq_block (
  grp TEXT NOT NULL, workflow TEXT NOT NULL, message_id TEXT NOT NULL, sequence INTEGER, reason TEXT NOT NULL,
  at_ms INTEGER NOT NULL, PRIMARY KEY (grp, workflow)) WITHOUT ROWID;
`;

function toBlocked(r: BlockRow): BlockedWorkflow {
  return {
    group: r.grp,
    workflowId: r.workflow,
    block: { messageId: r.message_id, sequence: r.sequence ?? undefined, reason: r.reason, atMs: r.at_ms },
  };
}

/**
 * The sequencing middleware's store on SQLite: per-workflow publish counters, the sequence each
 * group expects next, skipped ranges and blocks, in tables `agentbus_seq_*`. Every step is one
 * statement or one IMMEDIATE transaction, so processes sharing the file never hand out a number twice.
 */
export function sqliteSequenceStore(options: SqliteSequenceStoreOptions): SqliteSequenceStore {
  const db = openStoreDatabase(options);
  db.exec(SCHEMA);
  const next = db.prepare<[string], { last: number }>(
    'INSERT INTO agentbus_seq_counter (workflow, last) VALUES (?, 1) ON CONFLICT (workflow) DO UPDATE SET last = last + 1 RETURNING last',
  );
  const getExpected = db.prepare<[string, string], { expected: number }>(
    'SELECT expected FROM agentbus_seq_expected WHERE grp = ? AND workflow = ?',
  );
  const advance = db.prepare<[string, string, number], { expected: number }>(
    'INSERT INTO agentbus_seq_expected (grp, workflow, expected) VALUES (?, ?, ?) ' +
      'ON CONFLICT (grp, workflow) DO UPDATE SET expected = max(expected, excluded.expected) RETURNING expected',
  );
  const addSkipped = db.prepare<[string, string, number, number]>(
    'INSERT INTO agentbus_seq_skipped (grp, workflow, from_seq, to_seq) VALUES (?, ?, ?, ?)',
  );
  const findSkipped = db.prepare<[string, string, number, number], { rowid: number; from_seq: number; to_seq: number }>(
    'SELECT rowid, from_seq, to_seq FROM agentbus_seq_skipped WHERE grp = ? AND workflow = ? AND from_seq <= ? AND to_seq >= ? LIMIT 1',
  );
  const deleteSkipped = db.prepare<[number]>('DELETE FROM agentbus_seq_skipped WHERE rowid = ?');
  const putBlock = db.prepare<[string, string, string, number | null, string, number]>(
    'INSERT INTO agentbus_seq_block (grp, workflow, message_id, sequence, reason, at_ms) VALUES (?, ?, ?, ?, ?, ?) ' +
      'ON CONFLICT (grp, workflow) DO UPDATE SET message_id = excluded.message_id, sequence = excluded.sequence, ' +
      'reason = excluded.reason, at_ms = excluded.at_ms',
  );
  const getBlock = db.prepare<[string, string], BlockRow>(
    'SELECT * FROM agentbus_seq_block WHERE grp = ? AND workflow = ?',
  );
  const delBlock = db.prepare<[string, string]>('DELETE FROM agentbus_seq_block WHERE grp = ? AND workflow = ?');
  const allBlocks = db.prepare<[], BlockRow>('SELECT * FROM agentbus_seq_block ORDER BY at_ms');
  const groupBlocks = db.prepare<[string], BlockRow>('SELECT * FROM agentbus_seq_block WHERE grp = ? ORDER BY at_ms');

  const skip = db.transaction((group: string, wf: string, from: number, to: number) => {
    addSkipped.run(group, wf, from, to);
    advance.get(group, wf, to + 1);
  });
  const take = db.transaction((group: string, wf: string, seq: number): boolean => {
    const row = findSkipped.get(group, wf, seq, seq);
    if (!row) return false;
    deleteSkipped.run(row.rowid);
    if (row.from_seq <= seq - 1) addSkipped.run(group, wf, row.from_seq, seq - 1);
    if (seq + 1 <= row.to_seq) addSkipped.run(group, wf, seq + 1, row.to_seq);
    return true;
  });

  return {
    async nextSequence(wf) {
      return (next.get(wf) as { last: number }).last;
    },
    async expected(group, wf) {
      return getExpected.get(group, wf)?.expected ?? 1;
    },
    async advance(group, wf, seq) {
      return (advance.get(group, wf, seq + 1) as { expected: number }).expected;
    },
    async skip(group, wf, from, to) {
      skip.immediate(group, wf, from, to);
    },
    async takeSkipped(group, wf, seq) {
      return take.immediate(group, wf, seq);
    },
    async block(group, wf, b: WorkflowBlock) {
      putBlock.run(group, wf, b.messageId, b.sequence ?? null, b.reason, b.atMs);
    },
    async blocked(group, wf) {
      const r = getBlock.get(group, wf);
      return r && toBlocked(r).block;
    },
    async unblock(group, wf) {
      return delBlock.run(group, wf).changes > 0;
    },
    async listBlocked(group) {
      return (group === undefined ? allBlocks.all() : groupBlocks.all(group)).map(toBlocked);
    },
    close() {
      db.close();
    },
  };
}
