import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sequenceStoreContract } from '@agentbus/conformance';
import { idempotencyKey } from '@agentbus/core';
import { sqliteIdempotencyStore, sqliteSequenceStore } from '@agentbus/sqlite';
import { afterAll, expect, it } from 'vitest';

const dir = mkdtempSync(join(tmpdir(), 'agentbus-seqstore-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

sequenceStoreContract({
  name: 'SQLite',
  open: (name) => sqliteSequenceStore({ path: join(dir, `${name}.db`) }),
  durable: true,
});

it('two connections to one file never hand out the same sequence number', async () => {
  const path = join(dir, 'shared.db');
  const a = sqliteSequenceStore({ path });
  const b = sqliteSequenceStore({ path });
  const got = await Promise.all(Array.from({ length: 200 }, (_, i) => (i % 2 ? a : b).nextSequence('w')));
  expect(new Set(got).size).toBe(200);
  a.close();
  b.close();
});

it('commits a side effect and the dedup completion in one transaction, or neither', async () => {
  const store = sqliteIdempotencyStore({ path: join(dir, 'outbox.db') });
  const key = idempotencyKey('g', { source: 'agent', id: 'm1' });
  expect(await store.begin(key, 30_000)).toBe('new');
  expect(() =>
    store.transaction(
      (db) => {
        db.exec('CREATE TABLE IF NOT EXISTS effects (id TEXT PRIMARY KEY)');
        db.prepare('INSERT INTO effects VALUES (?)').run('m1');
        throw new Error('crashed before commit');
      },
      { key, ttlMs: 60_000 },
    ),
  ).toThrow('crashed before commit');
  // Rolled back: the claim is still only a claim and no effect was written.
  expect(await store.begin(key, 30_000)).toBe('busy');
  const count = () =>
    store.transaction((db) => {
      db.exec('CREATE TABLE IF NOT EXISTS effects (id TEXT PRIMARY KEY)');
      return (db.prepare('SELECT count(*) AS n FROM effects').get() as { n: number }).n;
    });
  expect(count()).toBe(0);
  store.transaction((db) => db.prepare('INSERT INTO effects VALUES (?)').run('m1'), { key, ttlMs: 60_000 });
  expect(count()).toBe(1);
  expect(await store.begin(key, 30_000)).toBe('done');
  store.close();
});
