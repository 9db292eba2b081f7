import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type SqliteTransport, sqliteTransport } from '../src/index.js';
import { bodyN, message, nextDelivery, query, tempDir } from './helpers.js';

describe('SqliteTransport lastError', () => {
  let tmp: ReturnType<typeof tempDir>;
  let path: string;
  const open: SqliteTransport[] = [];
  const transport = () => {
    const t = sqliteTransport({ path });
    open.push(t);
    return t;
  };

  beforeEach(() => {
    tmp = tempDir();
    path = `${tmp.dir}/bus.db`;
  });
  afterEach(async () => {
    await Promise.all(open.splice(0).map((t) => t.close()));
    tmp.cleanup();
  });

  it('opens a file made before the last_error column existed, adds it and keeps the waiting messages', async () => {
    const first = transport();
    await (await first.subscribe('jobs.>', { group: 'w', prefetch: 1, ackTimeoutMs: 30_000 })).close();
    await first.publish([message('jobs.a', 1)]);
    await first.close();
    // The file as an earlier version left it: same schema version, no last_error column.
    const db = new Database(path);
    db.exec('ALTER TABLE deliveries DROP COLUMN last_error');
    db.close();
    expect(query<number>(path, "SELECT count(*) FROM pragma_table_info('deliveries') WHERE name = 'last_error'")).toBe(
      0,
    );

    const second = transport();
    const sub = await second.subscribe('jobs.>', { group: 'w', prefetch: 1, ackTimeoutMs: 30_000 });
    expect(query<number>(path, "SELECT count(*) FROM pragma_table_info('deliveries') WHERE name = 'last_error'")).toBe(
      1,
    );
    expect(query<number>(path, 'PRAGMA user_version')).toBe(1);
    const d1 = await nextDelivery(sub);
    expect([bodyN(d1), d1.attempt, d1.lastError]).toEqual([1, 1, undefined]);
    await d1.nack({ error: 'HANDLER: boom' });
    const d2 = await nextDelivery(sub);
    expect([bodyN(d2), d2.attempt, d2.lastError]).toEqual([1, 2, 'HANDLER: boom']);
    await d2.ack();
  });

  it('a redelivery released unseen on close keeps its lastError; a handed-out one comes back without', async () => {
    const first = transport();
    const sub = await first.subscribe('jobs.>', { group: 'w', prefetch: 2, ackTimeoutMs: 30_000 });
    await first.publish([message('jobs.a', 1), message('jobs.a', 2)]);
    for (let i = 0; i < 2; i++) {
      const d = await nextDelivery(sub);
      await d.nack({ error: `failed ${bodyN(d)}` });
    }
    // One claim takes both redeliveries: the first is handed out, the second stays buffered.
    const handedOut = await nextDelivery(sub);
    expect([bodyN(handedOut), handedOut.attempt, handedOut.lastError]).toEqual([1, 2, 'failed 1']);
    await first.close();

    const second = transport();
    const again = await second.subscribe('jobs.>', { group: 'w', prefetch: 2, ackTimeoutMs: 30_000 });
    const got = [];
    for (let i = 0; i < 2; i++) {
      const d = await nextDelivery(again);
      got.push([bodyN(d), d.attempt, d.lastError]);
      await d.ack();
    }
    expect(got).toEqual([
      [1, 3, undefined],
      [2, 2, 'failed 2'],
    ]);
  });
});
