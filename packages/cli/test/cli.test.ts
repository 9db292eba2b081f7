import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Envelope } from '@agentbus/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DeadLetterView } from '../src/dlq/dead-letter-view.js';
import { agentbus, CliProcess, json } from './cli-process.js';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'agentbus-cli-test-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A fresh database file per test, so tests share nothing. */
function sqliteUrl(name: string): string {
  return `sqlite:${join(dir, `${name}.db`)}`;
}

const noStackTrace = (stderr: string) => expect(stderr).not.toMatch(/^\s+at /m);

// Each test has its own database, so these run side by side.
describe.concurrent('agentbus publish and tail', () => {
  it('tail receives what publish sent, in its own group, and exits after --count', async () => {
    const transport = sqliteUrl('publish-tail');
    const tail = new CliProcess(['--transport', transport, 'tail', 'orders.>', '--count', '1', '--json']);
    await tail.waitFor((p) => p.stderr.includes('tailing'), 'tail to subscribe');

    const pub = await agentbus([
      '--transport',
      transport,
      'publish',
      'orders.created',
      '{"order":42}',
      '--source',
      'shop',
      '--header',
      'tenant=acme',
    ]);
    expect(pub.code).toBe(0);
    const id = pub.stdout.trim();
    expect(id).toMatch(/^[0-9a-f-]{36}$/);

    const out = await tail.exit();
    expect(out.code).toBe(0);
    const env = JSON.parse(out.stdout.trim()) as Envelope;
    expect(env).toMatchObject({ id, topic: 'orders.created', source: 'shop', data: { order: 42 } });
    expect(env.headers).toEqual({ tenant: 'acme' });
  });

  it('reads the transport URL from AGENTBUS_TRANSPORT', async () => {
    const out = await agentbus(['publish', 'a.b', '{}', '--count', '3'], { AGENTBUS_TRANSPORT: 'memory:' });
    expect(out.code).toBe(0);
    expect(out.stdout.trim().split('\n')).toHaveLength(3);
  });

  it('rejects malformed JSON with one clear line and exit code 2', async () => {
    const out = await agentbus(['--transport', 'memory:', 'publish', 'a.b', '{"task": oops}']);
    expect(out.code).toBe(2);
    expect(out.stdout).toBe('');
    expect(out.stderr.trim()).toMatch(/^error: USAGE: <json> is not valid JSON \(.+\): \{"task": oops\}$/);
    noStackTrace(out.stderr);
  });

  it('rejects an invalid topic as bad input (exit 2)', async () => {
    const out = await agentbus(['--transport', 'memory:', 'publish', 'a..b', '{}']);
    expect(out.code).toBe(2);
    expect(out.stderr.trim()).toMatch(/^error: VALIDATION: invalid topic "a\.\.b"/);
  });

  it('closes the bus and exits 130 on SIGINT', async () => {
    const tail = new CliProcess(['--transport', sqliteUrl('sigint'), 'tail', 'x.>']);
    await tail.waitFor((p) => p.stderr.includes('tailing'), 'tail to subscribe');
    tail.child.kill('SIGINT');
    const out = await tail.exit();
    expect(out.code).toBe(130);
    expect(out.stderr).not.toMatch(/error:/);
  });
});

describe.concurrent('agentbus bench', () => {
  it('runs the same engine as npm run bench and ends with the JSON line', async () => {
    const args = ['--transport', 'memory:', 'bench', '--messages', '200', '--warmup', '0', '--consumers', '1'];
    const out = await agentbus([...args, '--json']);
    expect(out.code, out.stderr).toBe(0);
    const report = JSON.parse(out.stdout.trim().split('\n').at(-1) ?? '') as Record<string, number | string>;
    expect(report).toMatchObject({ transport: 'memory:', messages: 200, consumers: 1, raw: 'raw array queue' });
    expect(report.e2e_per_s).toBeGreaterThan(0);
  });
});

describe.concurrent('transport URLs', () => {
  it('names the supported schemes for an unknown one (CONFIG, exit 2)', async () => {
    const out = await agentbus(['--transport', 'kafka://localhost:9092', 'dlq', 'list']);
    expect(out.code).toBe(2);
    expect(out.stderr.trim()).toMatch(
      /^error: CONFIG: transport: unsupported transport URL 'kafka:\/\/localhost:9092'/,
    );
    expect(out.stderr).toContain('memory:, sqlite:PATH');
    noStackTrace(out.stderr);
  });

  it('refuses an unknown transport scheme with the supported ones', async () => {
    const out = await agentbus(['--transport', 'kafka://localhost:9092', 'dlq', 'list']);
    expect(out.code).toBe(2);
    expect(out.stderr).toMatch(
      /^error: CONFIG: transport: unsupported transport URL 'kafka:\/\/localhost:9092'.*nats:\/\//,
    );
  });
});

describe('agentbus demo and dlq', () => {
  const transport = () => sqliteUrl('demo');
  let demo: Awaited<ReturnType<typeof agentbus>>;
  let runId: string;

  beforeAll(async () => {
    demo = await agentbus(['--transport', transport(), 'demo']);
    runId = /run (\w+)/.exec(demo.stdout)?.[1] ?? '';
  });

  it('exits 0 and prints who did what, the retry and the dead letter', () => {
    expect(demo.code, demo.stderr).toBe(0);
    expect(demo.stderr).toBe('');
    expect(demo.stdout).toMatch(/worker-1 {2}took t\d/);
    expect(demo.stdout).toMatch(/worker-2 {2}took t\d/);
    expect(demo.stdout).toMatch(/took t3 .*\(attempt 2, \d+ ms after the failure\)/);
    const summary = demo.stdout.slice(demo.stdout.indexOf('summary after'));
    const done = [...summary.matchAll(/worker-\d +(\d) done/g)].map((m) => Number(m[1]));
    expect(done.reduce((a, b) => a + b, 0)).toBe(5);
    expect(summary).toMatch(/retries +1 {2}t3 failed on attempt 1, retried after 400 ms/);
    expect(summary).toMatch(/dead-lettered 1 {2}t6 reason=unrecoverable error=UNRECOVERABLE: /);
  });

  it('leaves one dead letter that dlq list and dlq show describe', async () => {
    const list = json<DeadLetterView[]>(await agentbus(['--transport', transport(), 'dlq', 'list', '--json']));
    expect(list).toHaveLength(1);
    const [record] = list;
    expect(record).toMatchObject({ reason: 'unrecoverable', topic: `demo.${runId}.task.parse`, attempts: 1 });

    const table = await agentbus(['--transport', transport(), 'dlq', 'list', '--reason', 'unrecoverable']);
    expect(table.stdout).toMatch(/^ID +DEAD-LETTERED +GROUP +TOPIC +REASON +ATTEMPTS +ERROR$/m);
    expect(table.stdout).toContain(record?.id);

    const show = json<DeadLetterView>(
      await agentbus(['--transport', transport(), 'dlq', 'show', `${record?.id}`, '--json']),
    );
    expect(show.envelope?.data).toMatchObject({ id: 't6', behaviour: 'poison' });
    expect(show.error).toMatch(/^UNRECOVERABLE: spreadsheet is corrupt/);

    const missing = await agentbus(['--transport', transport(), 'dlq', 'show', 'no-such-id']);
    expect(missing.code).toBe(1);
    expect(missing.stderr.trim()).toBe('error: NOT_FOUND: no dead letter with id no-such-id');
  });

  it('replays the dead letter to its group, where it is delivered again', async () => {
    const [record] = json<DeadLetterView[]>(await agentbus(['--transport', transport(), 'dlq', 'list', '--json']));
    const replay = await agentbus(['--transport', transport(), 'dlq', 'replay', `${record?.id}`]);
    expect(replay.code).toBe(0);
    expect(replay.stdout.trim()).toBe('replayed 1 dead letter');
    expect(json(await agentbus(['--transport', transport(), 'dlq', 'list', '--json']))).toEqual([]);

    const tail = await agentbus([
      '--transport',
      transport(),
      'tail',
      `demo.${runId}.>`,
      '--group',
      `${record?.group}`,
      '--count',
      '1',
      '--json',
    ]);
    expect(tail.code).toBe(0);
    expect(JSON.parse(tail.stdout)).toMatchObject({ id: record?.messageId, data: { id: 't6' } });
  });

  it('purges dead letters matching filters; a re-run on the same file keeps to its own namespace', async () => {
    const [again, usage] = await Promise.all([
      agentbus(['--transport', transport(), 'demo']),
      agentbus(['--transport', transport(), 'dlq', 'purge']),
    ]);
    expect(again.code, again.stderr).toBe(0);
    const second = /run (\w+)/.exec(again.stdout)?.[1];
    expect(second).not.toBe(runId);
    expect(again.stdout).toMatch(/dead-lettered 1 /);

    expect(usage.code).toBe(2);
    expect(usage.stderr).toMatch(/^error: USAGE: dlq purge: give a record id, or --all/);

    const purge = await agentbus([
      '--transport',
      transport(),
      'dlq',
      'purge',
      '--all',
      '--topic',
      `demo.${second}.>`,
      '--json',
    ]);
    expect(json(purge)).toEqual({ purged: 1 });
    expect(json(await agentbus(['--transport', transport(), 'dlq', 'list', '--json']))).toEqual([]);
  });
});
