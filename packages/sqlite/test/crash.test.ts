import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { crashSoak, publishNumbered, startConsumerChild, until } from '@agentbus/conformance';
import { sqliteTransport } from '@agentbus/sqlite';
import { afterAll, expect, it } from 'vitest';

const dir = mkdtempSync(join(tmpdir(), 'agentbus-crash-'));
const path = join(dir, 'bus.db');
afterAll(() => rmSync(dir, { recursive: true, force: true }));

it('loses nothing when a consumer process is SIGKILLed 10 times while working through 10,000 messages', async () => {
  const lines: string[] = [];
  const result = await crashSoak({
    open: () => sqliteTransport({ path, pollIntervalMs: 10 }),
    childModule: fileURLToPath(new URL('./fixtures/child-transport.ts', import.meta.url)),
    childArg: path,
    messages: 10_000,
    kills: 10,
    ackTimeoutMs: 1_000,
    log: (l) => lines.push(l),
  });
  console.log(`sqlite crash soak: ${JSON.stringify(result)}`);
  expect(result.processed).toBe(10_000);
  expect(result.kills).toBe(10);
  expect(result.killPoints).toHaveLength(10);
  expect(result.deadLetters).toBe(0);
}, 300_000);

it('the soak child acks nothing it has not printed, even when its output is read late', async () => {
  // The soak counts a message as processed by the line the child printed for it. A line written
  // to a full pipe waits inside the child, so if the child acked before the line was out, a
  // SIGKILL lost the line of an acked message and the soak reported it missing.
  const n = 5_000;
  const topic = `late${randomUUID().slice(0, 8)}.work`;
  const group = `${topic}-workers`;
  const t = sqliteTransport({ path, pollIntervalMs: 10 });
  await t.connect();
  try {
    await (await t.subscribe(topic, { group, prefetch: 1, ackTimeoutMs: 60_000 })).close();
    await publishNumbered(t, topic, n);
    const child = startConsumerChild({
      module: fileURLToPath(new URL('./fixtures/child-transport.ts', import.meta.url)),
      arg: path,
      pattern: topic,
      group,
      ackTimeoutMs: 60_000,
      prefetch: 32,
      mode: 'ack',
    });
    // Let the pipe fill: nothing is read from the child until it is killed.
    child.process.stdout?.pause();
    const acked = async () => {
      const s = await t.groupStats(group);
      return n - s.backlog - s.inFlight;
    };
    // Kill once everything is acked or acking has stalled for a second (the child waits on
    // the full pipe): either way the pipe has been full for a while.
    let last = -1;
    let changedAt = Date.now();
    await until(
      async () => {
        const a = await acked();
        if (a !== last) [last, changedAt] = [a, Date.now()];
        return a === n || (a > 0 && Date.now() - changedAt >= 1_000);
      },
      120_000,
      'the child to ack everything or stall',
    );
    await child.kill();
    child.process.stdout?.resume();
    const ackedAtKill = await acked();
    const printed = new Set(child.lines.filter((l) => l.id).map((l) => l.id));
    expect(ackedAtKill).toBeGreaterThan(0);
    expect(printed.size).toBeGreaterThanOrEqual(ackedAtKill);
  } finally {
    await t.close();
  }
}, 180_000);
