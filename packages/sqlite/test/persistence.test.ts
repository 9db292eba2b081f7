import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type SqliteTransport, sqliteTransport } from '../src/index.js';
import { bodyN, message, nextDelivery, query, tempDir, until } from './helpers.js';

const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const FIXTURE = fileURLToPath(new URL('./fixtures/claim-and-hang.ts', import.meta.url));

describe('SqliteTransport persistence', () => {
  let tmp: ReturnType<typeof tempDir>;
  let path: string;
  const open: SqliteTransport[] = [];
  const children: ChildProcess[] = [];
  const transport = () => {
    const t = sqliteTransport({ path });
    open.push(t);
    return t;
  };

  beforeEach(() => {
    tmp = tempDir();
    path = `${tmp.dir}/nested/dir/bus.db`;
  });
  afterEach(async () => {
    for (const c of children.splice(0)) c.kill('SIGKILL');
    await Promise.all(open.splice(0).map((t) => t.close()));
    tmp.cleanup();
  });

  it('creates the parent directory and a WAL-mode file with the schema version', async () => {
    const t = transport();
    await t.connect();
    expect(query<string>(path, 'PRAGMA journal_mode')).toBe('wal');
    expect(query<number>(path, 'PRAGMA user_version')).toBe(1);
  });

  it('delivers messages published before a restart, in priority then publish order', async () => {
    const first = transport();
    // Declaring the group is what makes it receive messages; no consumer needs to be running.
    await (await first.subscribe('jobs.>', { group: 'w', prefetch: 1, ackTimeoutMs: 30_000 })).close();
    await first.publish([message('jobs.a', 1), message('jobs.b', 2, { priority: 9 }), message('jobs.c', 3)]);
    await first.close();

    const second = transport();
    const sub = await second.subscribe('jobs.>', { group: 'w', prefetch: 10, ackTimeoutMs: 30_000 });
    const got = [];
    for (let i = 0; i < 3; i++) {
      const d = await nextDelivery(sub);
      got.push([bodyN(d), d.attempt, d.message.topic]);
      await d.ack();
    }
    expect(got).toEqual([
      [2, 1, 'jobs.b'],
      [1, 1, 'jobs.a'],
      [3, 1, 'jobs.c'],
    ]);
  });

  it('on close releases unsettled deliveries: handed-out ones come back with attempt + 1, buffered ones unchanged', async () => {
    const first = transport();
    const sub = await first.subscribe('jobs.>', { group: 'w', prefetch: 2, ackTimeoutMs: 30_000 });
    await first.publish([message('jobs.a', 1), message('jobs.a', 2)]);
    const handedOut = await nextDelivery(sub);
    expect([bodyN(handedOut), handedOut.attempt]).toEqual([1, 1]);
    // Message 2 was claimed into the prefetch buffer but never seen by the consumer.
    await first.close();

    const second = transport();
    const again = await second.subscribe('jobs.>', { group: 'w', prefetch: 2, ackTimeoutMs: 30_000 });
    const a = await nextDelivery(again);
    const b = await nextDelivery(again);
    expect([
      [bodyN(a), a.attempt],
      [bodyN(b), b.attempt],
    ]).toEqual([
      [1, 2],
      [2, 1],
    ]);
  });

  it('redelivers with attempt + 1 a message leased by a consumer process that was killed', async () => {
    const setup = transport();
    await (await setup.subscribe('jobs.>', { group: 'w', prefetch: 1, ackTimeoutMs: 30_000 })).close();
    await setup.publish([message('jobs.crash', 7, { id: 'crash-1' })]);
    await setup.close();

    const child = spawn(process.execPath, ['--conditions=source', '--import', 'tsx', FIXTURE, path, 'w', '300'], {
      cwd: REPO_ROOT,
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    children.push(child);
    let out = '';
    child.stdout?.on('data', (chunk: Buffer) => {
      out += chunk.toString();
    });
    await until(() => out.includes('\n'), 20_000);
    expect(out.trim()).toBe('claimed crash-1 1');
    child.kill('SIGKILL');
    await until(() => child.exitCode !== null || child.signalCode !== null);

    // The killed consumer settled nothing; its lease runs out and the message comes back.
    const survivor = transport();
    const sub = await survivor.subscribe('jobs.>', { group: 'w', prefetch: 1, ackTimeoutMs: 30_000 });
    const d = await nextDelivery(sub);
    expect([d.message.id, d.attempt]).toEqual(['crash-1', 2]);
    await d.ack();
    expect(query(path, 'SELECT count(*) FROM deliveries')).toBe(0);
  }, 30_000);

  it('keeps body bytes, headers, priority, expiry and publish time across a restart', async () => {
    const first = transport();
    await (await first.subscribe('bin.*', { group: 'w', prefetch: 1, ackTimeoutMs: 30_000 })).close();
    const body = new Uint8Array([0, 1, 2, 255, 254]);
    const expiresAtMs = Date.now() + 3_600_000;
    const before = Date.now();
    await first.publish([
      { id: 'bin-1', topic: 'bin.x', body, headers: { a: '1', traceparent: 'tp' }, priority: 7, expiresAtMs },
    ]);
    await first.close();

    const second = transport();
    const d = await nextDelivery(await second.subscribe('bin.*', { group: 'w', prefetch: 1, ackTimeoutMs: 30_000 }));
    expect(new Uint8Array(d.message.body)).toEqual(body);
    expect(d.message).toMatchObject({
      id: 'bin-1',
      topic: 'bin.x',
      headers: { a: '1', traceparent: 'tp' },
      priority: 7,
      expiresAtMs,
    });
    expect(d.message.publishedAtMs).toBeGreaterThanOrEqual(before);
  });
});
