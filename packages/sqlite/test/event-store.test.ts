import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { eventStoreContract, until } from '@agentbus/conformance';
import { ConcurrencyError, type StoredEvent, silentLogger } from '@agentbus/core';
import { sqliteEventStore } from '@agentbus/sqlite';
import Database from 'better-sqlite3';
import { afterAll, expect, it } from 'vitest';

const dir = mkdtempSync(join(tmpdir(), 'agentbus-eventstore-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A child process appending to a shared store (fixtures/event-store-child.ts); `go()` starts it. */
function startEventChild(path: string, who: string, count: number) {
  const script = fileURLToPath(new URL('./fixtures/event-store-child.ts', import.meta.url));
  const child = spawn(process.execPath, ['--conditions=source', '--import', 'tsx', script, path, who, String(count)], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const lines: { ready?: boolean; conflicts?: number }[] = [];
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk;
    const parts = stdout.split('\n');
    stdout = parts.pop() ?? '';
    for (const p of parts) if (p.trim()) lines.push(JSON.parse(p));
  });
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk;
  });
  const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
  return {
    exited,
    ready: () => lines.some((l) => l.ready),
    go: () => child.stdin.end('go\n'),
    conflicts: () => lines.find((l) => l.conflicts !== undefined)?.conflicts ?? 0,
    stderr: () => stderr,
  };
}

eventStoreContract({
  name: 'SQLite',
  open: (name, options) => sqliteEventStore({ ...options, path: join(dir, `${name}.db`) }),
  durable: true,
});

it('keeps its tables beside the transport and other stores in one file', async () => {
  const path = join(dir, 'shared-file.db');
  const store = sqliteEventStore({ path, logger: silentLogger });
  await store.append('order-1', [{ type: 'order.placed', data: { total: 1 } }]);
  await store.checkpoints.save('p', 1);
  await store.close();
  const db = new Database(path, { readonly: true });
  const tables = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").all();
  expect(tables).toEqual(expect.arrayContaining([{ name: 'agentbus_es_checkpoints' }, { name: 'agentbus_es_events' }]));
  expect(db.prepare('SELECT stream, version, type FROM agentbus_es_events').all()).toEqual([
    { stream: 'order-1', version: 1, type: 'order.placed' },
  ]);
  db.close();
});

it('two processes appending to one stream with expectedVersion never share a version, and a follower sees every event', async () => {
  const path = join(dir, 'two-processes.db');
  const store = sqliteEventStore({ path, logger: silentLogger, pollIntervalMs: 20 });
  const seen: StoredEvent[] = [];
  const sub = store.subscribeAll((e) => {
    seen.push(e);
  });
  const children = ['a', 'b'].map((who) => startEventChild(path, who, 100));
  await until(() => children.every((c) => c.ready()), 30_000, 'both children to open the store');
  for (const c of children) c.go();
  // Meanwhile this process competes too, retrying on ConcurrencyError as a command handler would.
  let conflicts = 0;
  for (let i = 0; i < 50; i++) {
    for (;;) {
      const version = await store.version('counter-1');
      try {
        await store.append('counter-1', [{ type: 'incremented', data: { by: 'parent', i } }], {
          expectedVersion: version,
        });
        break;
      } catch (err) {
        if (!(err instanceof ConcurrencyError)) throw err;
        conflicts++;
      }
    }
  }
  const codes = await Promise.all(children.map((c) => c.exited));
  expect(codes, children.map((c) => c.stderr()).join('\n')).toEqual([0, 0]);
  await until(() => seen.length === 250, 10_000, 'all 250 events at the follower');
  const retries = `retries after a conflict: ${conflicts} here, ${children.map((c) => c.conflicts()).join(' and ')} in the children`;
  expect(
    seen.map((e) => e.version),
    retries,
  ).toEqual(Array.from({ length: 250 }, (_, i) => i + 1));
  const by = (who: string) =>
    seen.filter((e) => (e.data as { by: string }).by === who).map((e) => (e.data as { i: number }).i);
  expect(by('parent')).toEqual(Array.from({ length: 50 }, (_, i) => i));
  expect(by('a')).toEqual(Array.from({ length: 100 }, (_, i) => i));
  expect(by('b')).toEqual(Array.from({ length: 100 }, (_, i) => i));
  await sub.close();
  await store.close();
}, 60_000);
