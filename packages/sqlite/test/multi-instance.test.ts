import { ManualClock } from '@agentbus/core';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type SqliteTransport, type SqliteTransportOptions, sqliteTransport } from '../src/index.js';
import { bodyN, message, nextDelivery, query, tempDir, until } from './helpers.js';

// Each SqliteTransport has its own connection, exactly as a second process sharing the file would.
describe('SqliteTransport instances sharing one file', () => {
  let tmp: ReturnType<typeof tempDir>;
  let path: string;
  const open: SqliteTransport[] = [];
  const transport = (options: Partial<SqliteTransportOptions> = {}) => {
    const t = sqliteTransport({ path, pollIntervalMs: 5, ...options });
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

  it('a group declared by one instance receives what another instance publishes after that', async () => {
    const consumer = transport();
    const publisher = transport();
    await publisher.publish([message('orders.created', 0)]);
    const sub = await consumer.subscribe('orders.*', { group: 'billing', prefetch: 1, ackTimeoutMs: 30_000 });
    // The publisher has never seen the group: routing reads the groups table inside its transaction.
    await publisher.publish([message('orders.created', 1), message('orders.other.deep', 2)]);
    const d = await nextDelivery(sub);
    expect([bodyN(d), d.attempt, d.group]).toEqual([1, 1, 'billing']);
    await d.ack();
    // Message 0 predates the group and message 2 does not match its pattern.
    expect(query(path, 'SELECT count(*) FROM deliveries')).toBe(0);
  });

  it('competing instances in one group get every message exactly once while they ack', async () => {
    const publisher = transport();
    const a = transport();
    const b = transport();
    const subA = await a.subscribe('work.>', { group: 'workers', prefetch: 4, ackTimeoutMs: 30_000 });
    const subB = await b.subscribe('work.>', { group: 'workers', prefetch: 4, ackTimeoutMs: 30_000 });
    const seen = { a: [] as number[], b: [] as number[] };
    const consume = async (sub: typeof subA, into: number[]) => {
      for await (const d of sub) {
        into.push(bodyN(d));
        // Yield to the event loop so that the other instance gets its share.
        await new Promise((r) => setTimeout(r, 1));
        await d.ack();
      }
    };
    const loops = [consume(subA, seen.a), consume(subB, seen.b)];
    const total = 300;
    for (let i = 0; i < total; i += 10) {
      await publisher.publish(Array.from({ length: 10 }, (_, k) => message('work.item', i + k)));
    }
    await until(() => seen.a.length + seen.b.length >= total, 15_000);
    await until(() => query(path, 'SELECT count(*) FROM deliveries') === 0);
    await subA.close();
    await subB.close();
    await Promise.all(loops);
    const all = [...seen.a, ...seen.b].sort((x, y) => x - y);
    expect(all).toEqual(Array.from({ length: total }, (_, i) => i));
    expect(seen.a.length).toBeGreaterThan(0);
    expect(seen.b.length).toBeGreaterThan(0);
  });

  it('a settle from a lease that ran out and was claimed elsewhere has no effect', async () => {
    const clock = new ManualClock();
    const a = transport({ clock });
    const b = transport({ clock });
    const subA = await a.subscribe('jobs.*', { group: 'w', prefetch: 1, ackTimeoutMs: 1000 });
    await a.publish([message('jobs.x', 1)]);
    const first = await nextDelivery(subA);
    expect(first.attempt).toBe(1);

    clock.advance(1001);
    const subB = await b.subscribe('jobs.*', { group: 'w', prefetch: 1, ackTimeoutMs: 1000 });
    const second = await nextDelivery(subB);
    expect([bodyN(second), second.attempt]).toEqual([1, 2]);

    // A's late ack must not delete the row B now holds…
    await first.ack();
    expect(query(path, 'SELECT count(*) FROM deliveries')).toBe(1);
    await subA.close();
    // …so B's nack still puts it back, and it is delivered a third time.
    await second.nack();
    const third = await nextDelivery(subB);
    expect([bodyN(third), third.attempt]).toEqual([1, 3]);
    await third.ack();
    expect(query(path, 'SELECT count(*) FROM deliveries')).toBe(0);
  });

  it('dead letters written by one instance are listed and replayed by another', async () => {
    const a = transport();
    const b = transport();
    const sub = await a.subscribe('jobs.*', { group: 'w', prefetch: 1, ackTimeoutMs: 30_000 });
    await b.publish([message('jobs.x', 1)]);
    const d = await nextDelivery(sub);
    await d.deadLetter('unrecoverable', { error: 'UNRECOVERABLE: bad input' });

    const [record] = await b.deadLetters.list();
    expect(record).toMatchObject({
      group: 'w',
      reason: 'unrecoverable',
      error: 'UNRECOVERABLE: bad input',
      attempts: 1,
    });
    expect(await b.deadLetters.replay(record?.id ?? '')).toBe(1);
    const again = await nextDelivery(sub);
    expect([bodyN(again), again.attempt, again.message.headers['x-agentbus-replays']]).toEqual([1, 1, '1']);
    await again.ack();
  });
});
