import { ManualClock } from '@agentbus/core';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type SqliteTransport, type SqliteTransportOptions, sqliteTransport } from '../src/index.js';
import { bodyN, message, nextDelivery, query, tempDir, until } from './helpers.js';

describe('SqliteTransport retention', () => {
  let tmp: ReturnType<typeof tempDir>;
  let path: string;
  const open: SqliteTransport[] = [];
  const transport = (options: Partial<SqliteTransportOptions> = {}) => {
    const t = sqliteTransport({ path, ...options });
    open.push(t);
    return t;
  };
  const messages = () => query(path, 'SELECT count(*) FROM messages');

  /** Publishes `n` messages on `jobs.x` and acks them all through `t`. */
  async function publishAndAck(t: SqliteTransport, n: number, from = 0): Promise<void> {
    const sub = await t.subscribe('jobs.*', { group: 'w', prefetch: 50, ackTimeoutMs: 30_000 });
    await t.publish(Array.from({ length: n }, (_, i) => message('jobs.x', from + i)));
    for (let i = 0; i < n; i++) await (await nextDelivery(sub)).ack();
    await sub.close();
  }

  beforeEach(() => {
    tmp = tempDir();
    path = `${tmp.dir}/bus.db`;
  });
  afterEach(async () => {
    await Promise.all(open.splice(0).map((t) => t.close()));
    tmp.cleanup();
  });

  it('by default the sweep deletes every message all its groups settled, and nothing else', async () => {
    const t = transport({ sweepIntervalMs: 0 });
    const other = await t.subscribe('jobs.*', { group: 'audit', prefetch: 500, ackTimeoutMs: 30_000 });
    await publishAndAck(t, 200);
    // Still needed by the `audit` group.
    expect(await t.sweep()).toBe(0);
    expect(messages()).toBe(200);
    // Settled out of order: every other message, then the rest.
    const held = [];
    for (let i = 0; i < 200; i++) {
      const d = await nextDelivery(other);
      if (i % 2 === 0) await d.ack();
      else held.push(d);
    }
    expect(await t.sweep()).toBe(100);
    expect(messages()).toBe(100);
    for (const d of held) await d.ack();
    expect(await t.sweep()).toBe(100);
    expect(messages()).toBe(0);
  });

  it('finds every settled message among unsettled ones, however they interleave', async () => {
    const t = transport({ sweepIntervalMs: 0 });
    const a = await t.subscribe('jobs.*', { group: 'a', prefetch: 500, ackTimeoutMs: 30_000 });
    // Group b receives the odd messages and never consumes them.
    await (await t.subscribe('jobs.b', { group: 'b', prefetch: 1, ackTimeoutMs: 30_000 })).close();
    const total = 12_000;
    for (let i = 0; i < total; i += 1000) {
      await t.publish(Array.from({ length: 1000 }, (_, k) => message(`jobs.${(i + k) % 2 ? 'b' : 'a'}`, i + k)));
    }
    for (let i = 0; i < total; i++) {
      const d = await nextDelivery(a);
      // Every third message stays unsettled (delayed for an hour).
      await (bodyN(d) % 3 === 0 ? d.nack({ delayMs: 3_600_000 }) : d.ack());
    }
    // Deleted: settled by a (n % 3 != 0) and not needed by b (n even), i.e. even n not divisible by 6.
    expect(await t.sweep()).toBe(4000);
    expect(messages()).toBe(8000);
    expect(query(path, 'SELECT count(*) FROM messages WHERE CAST(substr(id, 3) AS INTEGER) % 6 IN (2, 4)')).toBe(0);
  });

  it('does not store a message no group receives', async () => {
    const t = transport({ sweepIntervalMs: 0 });
    await t.publish([message('nobody.listens', 1)]);
    expect(messages()).toBe(0);
  });

  it('keeps settled messages for maxAgeMs, then the sweep deletes them but never an unsettled one', async () => {
    const clock = new ManualClock();
    const t = transport({ clock, retention: { maxAgeMs: 60_000 }, sweepIntervalMs: 0 });
    await publishAndAck(t, 100);
    const pending = await t.subscribe('slow.*', { group: 'slow', prefetch: 1, ackTimeoutMs: 30_000 });
    await t.publish([message('slow.x', 1000)]);
    expect(messages()).toBe(101);

    clock.advance(59_000);
    expect(await t.sweep()).toBe(0);
    clock.advance(2_000);
    expect(await t.sweep()).toBe(100);
    expect(messages()).toBe(1);

    clock.advance(3_600_000);
    expect(await t.sweep()).toBe(0);
    const d = await nextDelivery(pending);
    await d.ack();
    clock.advance(60_001);
    expect(await t.sweep()).toBe(1);
    expect(messages()).toBe(0);
  });

  it('deletes exactly the settled messages published longer ago than maxAgeMs', async () => {
    const clock = new ManualClock();
    const t = transport({ clock, retention: { maxAgeMs: 60_000 }, sweepIntervalMs: 0 });
    for (let round = 0; round < 7; round++) {
      await publishAndAck(t, 10, round * 10);
      clock.advance(10_000);
    }
    // Published at 0s, 10s … 60s; now is 70s, so the rounds at 0s and 10s are past 60s.
    expect(await t.sweep()).toBe(20);
    expect(query(path, 'SELECT min(published_at) FROM messages')).toBe(clock.now() - 50_000);
    // Now 95s: the rounds at 20s and 30s follow.
    clock.advance(25_000);
    expect(await t.sweep()).toBe(20);
    expect(messages()).toBe(30);
  });

  it('keeps at most maxMessages settled messages, the newest', async () => {
    const t = transport({ retention: { maxAgeMs: Number.POSITIVE_INFINITY, maxMessages: 10 }, sweepIntervalMs: 0 });
    await publishAndAck(t, 50);
    expect(messages()).toBe(50);
    expect(await t.sweep()).toBe(40);
    expect(query(path, 'SELECT min(id) FROM messages')).toBe('m-40');
    expect(messages()).toBe(10);
  });

  it('runs the sweep periodically by itself', async () => {
    const t = transport({ retention: { maxAgeMs: 1 }, sweepIntervalMs: 10 });
    await publishAndAck(t, 300);
    await until(() => messages() === 0);
  });

  it('dead letters keep their own copy of a message that retention deleted', async () => {
    const t = transport({ sweepIntervalMs: 0 });
    const sub = await t.subscribe('jobs.*', { group: 'w', prefetch: 1, ackTimeoutMs: 30_000 });
    await t.publish([message('jobs.x', 1)]);
    await (await nextDelivery(sub)).deadLetter('unrecoverable');
    await t.sweep();
    expect(messages()).toBe(0);
    const [dead] = await t.deadLetters.list();
    expect(dead?.message.id).toBe('m-1');
    expect(JSON.parse(Buffer.from(dead?.message.body ?? []).toString())).toEqual({ n: 1 });
  });
});
