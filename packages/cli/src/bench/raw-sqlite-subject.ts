import { SQLITE_TRANSPORT_DEFAULTS } from '@agentbus/sqlite';
import Database from 'better-sqlite3';
import type { BenchChannel, BenchSubject, Consumers } from './bench-subject.js';

/** How long an idle raw consumer waits before looking again when no local publish woke it. */
const IDLE_POLL_MS = 10;

interface Row {
  readonly id: number;
  readonly sent_at: number;
  readonly body: Buffer;
}

/**
 * The floor for `sqlite:`: a plain better-sqlite3 queue table in WAL mode with
 * synchronous=NORMAL and the same page size (agentbus's settings). Producers insert with a prepared statement, one
 * transaction per batch; consumers select a batch by id and delete the rows they handled in
 * one transaction. No envelopes, groups, leases, attempts or dead letters.
 */
export class RawSqliteSubject implements BenchSubject {
  readonly label = 'raw better-sqlite3';
  readonly #db: Database.Database;
  readonly #body: Buffer;
  #closed = false;

  constructor(
    path: string,
    size: number,
    private readonly concurrency: number,
  ) {
    this.#db = new Database(path);
    this.#db.pragma(`page_size = ${SQLITE_TRANSPORT_DEFAULTS.pageSize}`);
    this.#db.pragma('journal_mode = WAL');
    this.#db.pragma('synchronous = NORMAL');
    this.#body = Buffer.alloc(size, 'x');
  }

  async channel(name: string): Promise<BenchChannel> {
    const db = this.#db;
    const table = `q_${name.replace(/\W/g, '_')}`;
    db.exec(`CREATE TABLE ${table} (id INTEGER PRIMARY KEY, sent_at REAL NOT NULL, body BLOB NOT NULL)`);
    const insert = db.prepare(`INSERT INTO ${table} (id, sent_at, body) VALUES (?, ?, ?)`);
    const select = db.prepare(`SELECT id, sent_at, body FROM ${table} WHERE id > ? ORDER BY id LIMIT ?`);
    const remove = db.prepare(`DELETE FROM ${table} WHERE id = ?`);
    // Ids come from a counter rather than SQLite: a rowid restarts at max + 1 once consumers
    // deleted the newest rows, and the consumers' cursor would then skip the new ones.
    let lastId = 0;
    const insertMany = db.transaction((count: number, t: number, body: Buffer) => {
      for (let i = 0; i < count; i++) insert.run(++lastId, t, body);
    });
    const removeMany = db.transaction((rows: readonly Row[]) => {
      for (const r of rows) remove.run(r.id);
    });
    const body = this.#body;
    const { concurrency } = this;
    let wakeUps: (() => void)[] = [];
    const notify = () => {
      const w = wakeUps;
      wakeUps = [];
      for (const f of w) f();
    };
    return {
      async publishBatch(count) {
        insertMany(count, performance.now(), body);
        notify();
      },
      async publishOne(sentAtMs) {
        insert.run(++lastId, sentAtMs, body);
        notify();
      },
      async consume(consumers, onMessage): Promise<Consumers> {
        let stopped = false;
        // Consumers share one process, so a shared cursor is their claim: no row is taken twice.
        let cursor = 0;
        const handle = async (r: Row) => onMessage(r.sent_at);
        const idle = () =>
          new Promise<void>((resolve) => {
            const timer = setTimeout(resolve, IDLE_POLL_MS);
            wakeUps.push(() => {
              clearTimeout(timer);
              resolve();
            });
          });
        const loop = async () => {
          while (!stopped) {
            const rows = select.all(cursor, concurrency) as Row[];
            const last = rows.at(-1);
            if (!last) {
              await idle();
              continue;
            }
            cursor = last.id;
            await Promise.all(rows.map(handle));
            removeMany(rows);
          }
        };
        const loops = Array.from({ length: consumers }, loop);
        return {
          stop: async () => {
            stopped = true;
            notify();
            await Promise.all(loops);
          },
        };
      },
    };
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#db.close();
  }
}
