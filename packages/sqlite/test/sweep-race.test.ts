import { join } from 'node:path';
import { uuidv7 } from '@agentbus/core';
import { expect, it } from 'vitest';
import { resolveSqliteOptions } from '../src/options.js';
import { RetentionSweeper } from '../src/retention-sweeper.js';
import { openDatabase } from '../src/schema.js';
import { SqliteStore, toMessageRow } from '../src/sqlite-store.js';
import { tempDir } from './helpers.js';

it('a sweep never deletes a message another process published just before the sweep took the write lock', () => {
  const { dir, cleanup } = tempDir();
  const path = join(dir, 'race.db');
  try {
    const opts = resolveSqliteOptions({ path });
    const a = new SqliteStore(openDatabase(opts), { ids: () => uuidv7(), keepUnrouted: false });
    const b = new SqliteStore(openDatabase(opts), { ids: () => uuidv7(), keepUnrouted: false });
    a.declareGroup('g', 't.>', Date.now());
    const msg = (id: string) => toMessageRow({ id, topic: 't.x', body: new Uint8Array([1]), headers: {}, priority: 4 });
    a.runBatch([(now) => a.publish([msg('old')], now) > 0], Date.now());
    a.runBatch(
      [
        (now) => {
          const [row] = a.claim('g', 1, now, now + 1000, 7);
          a.ack({ group: 'g', priority: 4, seq: row!.seq, token: 7 });
          return false;
        },
      ],
      Date.now(),
    );
    // "Another process" publishes right before the sweeper's transaction begins.
    const racy = {
      db: a.db,
      immediate: <R>(fn: () => R): R => {
        b.runBatch([(now) => b.publish([msg('new')], now) > 0], Date.now());
        return a.immediate(fn);
      },
    } as unknown as SqliteStore;
    new RetentionSweeper(racy, opts.retention).step(Date.now());
    const ids = (a.db.prepare('SELECT id FROM messages ORDER BY seq').all() as { id: string }[]).map((r) => r.id);
    expect(ids).toContain('new');
    expect(ids).not.toContain('old');
    let claimed = 0;
    a.runBatch(
      [
        (now) => {
          claimed = a.claim('g', 10, now, now + 1000, 9).length;
          return false;
        },
      ],
      Date.now(),
    );
    expect(claimed).toBeGreaterThan(0);
    a.db.close();
    b.db.close();
  } finally {
    cleanup();
  }
});
