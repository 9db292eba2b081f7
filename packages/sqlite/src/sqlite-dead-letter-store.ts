import {
  type Clock,
  type DeadLetter,
  type DeadLetterFilter,
  type DeadLetterStore,
  REPLAY_COUNT_HEADER,
} from '@agentbus/core';
import { toBusError } from './db-errors.js';
import { type MessageRow, parseHeaders, type SqliteStore, toInbound } from './sqlite-store.js';

/** A dead_letters row: its own id, the dead-letter facts, and a copy of the message (`msg_id` its id). */
interface DeadLetterRow extends Omit<MessageRow, 'id'> {
  readonly id: string;
  readonly group_name: string;
  readonly reason: string;
  readonly error: string | null;
  readonly attempts: number;
  readonly dead_lettered_at: number;
  readonly msg_id: string;
}

/** What the dead-letter store needs from its transport. */
export interface DeadLetterContext {
  readonly clock: Clock;
  /** The open store; throws ClosedError once the transport is closed. */
  store(): SqliteStore;
  /** Called after a replay committed: local consumers may have work. */
  onReplayed(): void;
}

const DEFAULT_LIST_LIMIT = 100;

/** SQLite `LIMIT -1` means no limit. */
function sqlLimit(limit: number | undefined): number {
  return limit === undefined ? -1 : Math.max(0, Math.floor(limit));
}

/** The WHERE clause of a filter; the topic pattern is matched by the same function that routes. */
function whereOf(filter: DeadLetterFilter): { sql: string; params: unknown[] } {
  const clauses: string[] = [];
  const params: unknown[] = [];
  const add = (clause: string, value: unknown) => {
    clauses.push(clause);
    params.push(value);
  };
  if (filter.group !== undefined) add('group_name = ?', filter.group);
  if (filter.reason !== undefined) add('reason = ?', filter.reason);
  if (filter.topic !== undefined) add('topic_matches(?, topic)', filter.topic);
  if (filter.sinceMs !== undefined) add('dead_lettered_at >= ?', filter.sinceMs);
  if (filter.untilMs !== undefined) add('dead_lettered_at < ?', filter.untilMs);
  return { sql: clauses.length === 0 ? '' : `WHERE ${clauses.join(' AND ')}`, params };
}

function toDeadLetter(row: DeadLetterRow): DeadLetter {
  return {
    id: row.id,
    group: row.group_name,
    reason: row.reason,
    error: row.error ?? undefined,
    attempts: row.attempts,
    deadLetteredAtMs: row.dead_lettered_at,
    message: toInbound({ ...row, id: row.msg_id }),
  };
}

/**
 * The dead letters of a SqliteTransport, in the `dead_letters` table of the same file: visible to,
 * and replayable by, every process sharing it. Records are ordered by time, then id.
 */
export class SqliteDeadLetterStore implements DeadLetterStore {
  readonly #ctx: DeadLetterContext;

  constructor(ctx: DeadLetterContext) {
    this.#ctx = ctx;
  }

  async list(filter: DeadLetterFilter = {}): Promise<DeadLetter[]> {
    return this.#run('dead-letter list', (store) =>
      this.#select(store, filter, filter.limit ?? DEFAULT_LIST_LIMIT).map(toDeadLetter),
    );
  }

  async get(id: string): Promise<DeadLetter | undefined> {
    return this.#run('dead-letter get', (store) => {
      const row = store.prepareCached<[string], DeadLetterRow>('SELECT * FROM dead_letters WHERE id = ?').get(id);
      return row && toDeadLetter(row);
    });
  }

  /**
   * Puts each chosen message back on its topic for the group that dead-lettered it (and no other),
   * with attempts starting over, the replay header incremented and, for `expired`, no expiry.
   */
  async replay(target: string | DeadLetterFilter): Promise<number> {
    const count = this.#run('dead-letter replay', (store) =>
      store.immediate(() => {
        const now = this.#ctx.clock.now();
        const rows = typeof target === 'string' ? this.#byId(store, target) : this.#select(store, target, target.limit);
        const remove = store.prepareCached<[string], never>('DELETE FROM dead_letters WHERE id = ?');
        for (const row of rows) {
          const headers = parseHeaders(row.headers);
          headers[REPLAY_COUNT_HEADER] = String(Number(headers[REPLAY_COUNT_HEADER] ?? '0') + 1);
          const message: MessageRow = {
            ...row,
            id: row.msg_id,
            headers: JSON.stringify(headers),
            expires_at: row.reason === 'expired' ? null : row.expires_at,
          };
          store.enqueueFor(row.group_name, message, now);
          remove.run(row.id);
        }
        return rows.length;
      }),
    );
    if (count > 0) this.#ctx.onReplayed();
    return count;
  }

  /** Deletes one record, those matching a filter, or (without a target) all of them. */
  async purge(target?: string | DeadLetterFilter): Promise<number> {
    return this.#run('dead-letter purge', (store) => {
      if (typeof target === 'string') {
        return store.prepareCached<[string], never>('DELETE FROM dead_letters WHERE id = ?').run(target).changes;
      }
      const filter = target ?? {};
      const where = whereOf(filter);
      const sql = `DELETE FROM dead_letters WHERE id IN
        (SELECT id FROM dead_letters ${where.sql} ORDER BY dead_lettered_at, id LIMIT ?)`;
      return store.prepareCached<unknown[], never>(sql).run(...where.params, sqlLimit(filter.limit)).changes;
    });
  }

  #byId(store: SqliteStore, id: string): DeadLetterRow[] {
    const row = store.prepareCached<[string], DeadLetterRow>('SELECT * FROM dead_letters WHERE id = ?').get(id);
    return row ? [row] : [];
  }

  #select(store: SqliteStore, filter: DeadLetterFilter, limit: number | undefined): DeadLetterRow[] {
    const where = whereOf(filter);
    const sql = `SELECT * FROM dead_letters ${where.sql} ORDER BY dead_lettered_at, id LIMIT ?`;
    return store.prepareCached<unknown[], DeadLetterRow>(sql).all(...where.params, sqlLimit(limit));
  }

  #run<R>(operation: string, fn: (store: SqliteStore) => R): R {
    const store = this.#ctx.store();
    try {
      return fn(store);
    } catch (err) {
      throw toBusError(err, operation);
    }
  }
}
