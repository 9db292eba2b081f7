import { ManualClock, REPLAY_COUNT_HEADER } from '@agentbus/core';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type SqliteTransport, type SqliteTransportOptions, sqliteTransport } from '../src/index.js';
import { bodyN, message, nextDelivery, query, tempDir } from './helpers.js';

describe('SqliteTransport dead letters', () => {
  let tmp: ReturnType<typeof tempDir>;
  let path: string;
  let clock: ManualClock;
  const open: SqliteTransport[] = [];
  const transport = (options: Partial<SqliteTransportOptions> = {}) => {
    let n = 0;
    const t = sqliteTransport({ path, clock, ids: () => `dl-${String(++n).padStart(3, '0')}`, ...options });
    open.push(t);
    return t;
  };
  const rowsOf = (group: string) => query(path, 'SELECT count(*) FROM deliveries WHERE group_name = ?', group);

  beforeEach(() => {
    tmp = tempDir();
    path = `${tmp.dir}/bus.db`;
    clock = new ManualClock();
  });
  afterEach(async () => {
    await Promise.all(open.splice(0).map((t) => t.close()));
    tmp.cleanup();
  });

  it('replay puts the message back for the group that dead-lettered it and no other', async () => {
    const t = transport();
    const failing = await t.subscribe('orders.*', { group: 'mailer', prefetch: 1, ackTimeoutMs: 30_000 });
    const healthy = await t.subscribe('orders.>', { group: 'ledger', prefetch: 1, ackTimeoutMs: 30_000 });
    await t.publish([message('orders.created', 1)]);
    await (await nextDelivery(healthy)).ack();
    const d = await nextDelivery(failing);
    await d.nack();
    const retried = await nextDelivery(failing);
    expect(retried.attempt).toBe(2);
    clock.advance(5);
    await retried.deadLetter('max-attempts', { error: 'HANDLER: smtp down' });

    const [record] = await t.deadLetters.list();
    expect(record).toEqual({
      id: 'dl-001',
      group: 'mailer',
      reason: 'max-attempts',
      error: 'HANDLER: smtp down',
      attempts: 2,
      deadLetteredAtMs: clock.now(),
      message: expect.objectContaining({ id: 'm-1', topic: 'orders.created', priority: 4 }),
    });
    expect(await t.deadLetters.get('dl-001')).toEqual(record);

    expect(await t.deadLetters.replay('dl-001')).toBe(1);
    expect([rowsOf('mailer'), rowsOf('ledger')]).toEqual([1, 0]);
    const replayed = await nextDelivery(failing);
    expect([bodyN(replayed), replayed.attempt, replayed.message.topic]).toEqual([1, 1, 'orders.created']);
    expect(replayed.message.headers).toEqual({ 'content-type': 'application/json', [REPLAY_COUNT_HEADER]: '1' });
    expect(await t.deadLetters.get('dl-001')).toBeUndefined();

    // A second trip to the dead letters counts the replays on.
    await replayed.deadLetter('max-attempts');
    expect(await t.deadLetters.replay({ group: 'mailer' })).toBe(1);
    expect((await nextDelivery(failing)).message.headers[REPLAY_COUNT_HEADER]).toBe('2');
  });

  it('dead-letters an expired message when it would be claimed, and replay clears the expiry', async () => {
    const t = transport();
    const sub = await t.subscribe('jobs.*', { group: 'w', prefetch: 5, ackTimeoutMs: 30_000 });
    const expiresAtMs = clock.now() + 1000;
    await t.publish([message('jobs.x', 1, { expiresAtMs }), message('jobs.x', 2, { priority: 0 })]);
    clock.advance(1000);
    const d = await nextDelivery(sub);
    expect(bodyN(d)).toBe(2);
    await d.ack();

    const [record] = await t.deadLetters.list({ reason: 'expired' });
    expect(record).toMatchObject({
      group: 'w',
      reason: 'expired',
      error: `expired at ${new Date(expiresAtMs).toISOString()}`,
      attempts: 0,
      message: { id: 'm-1', expiresAtMs },
    });
    await t.deadLetters.replay(record?.id ?? '');
    const replayed = await nextDelivery(sub);
    expect([bodyN(replayed), replayed.message.expiresAtMs]).toEqual([1, undefined]);
  });

  it('lists, filters, replays and purges by filter, ordered by time then id', async () => {
    const t = transport();
    const subA = await t.subscribe('a.>', { group: 'ga', prefetch: 10, ackTimeoutMs: 30_000 });
    const subB = await t.subscribe('b.*', { group: 'gb', prefetch: 10, ackTimeoutMs: 30_000 });
    await t.publish([message('a.one.x', 1), message('a.two', 2), message('b.one', 3), message('b.two', 4)]);
    const start = clock.now();
    for (const [sub, reason] of [
      [subA, 'decode'],
      [subA, 'unrecoverable'],
      [subB, 'decode'],
      [subB, 'validation'],
    ] as const) {
      await (await nextDelivery(sub)).deadLetter(reason);
      clock.advance(10);
    }

    const ids = async (filter = {}) => (await t.deadLetters.list(filter)).map((d) => d.message.id);
    expect(await ids()).toEqual(['m-1', 'm-2', 'm-3', 'm-4']);
    expect(await ids({ topic: 'a.>' })).toEqual(['m-1', 'm-2']);
    expect(await ids({ topic: '*.one' })).toEqual(['m-3']);
    expect(await ids({ group: 'gb', reason: 'decode' })).toEqual(['m-3']);
    expect(await ids({ sinceMs: start + 10, untilMs: start + 30 })).toEqual(['m-2', 'm-3']);
    expect(await ids({ limit: 3 })).toEqual(['m-1', 'm-2', 'm-3']);

    expect(await t.deadLetters.replay({ reason: 'decode', limit: 1 })).toBe(1);
    expect(await ids()).toEqual(['m-2', 'm-3', 'm-4']);
    expect(bodyN(await nextDelivery(subA))).toBe(1);

    expect(await t.deadLetters.purge({ group: 'gb' })).toBe(2);
    expect(await ids()).toEqual(['m-2']);
    expect(await t.deadLetters.purge('no-such-id')).toBe(0);
    expect(await t.deadLetters.purge()).toBe(1);
    expect(await ids()).toEqual([]);
  });

  it('is readable after a restart', async () => {
    const first = transport();
    const sub = await first.subscribe('jobs.*', { group: 'w', prefetch: 1, ackTimeoutMs: 30_000 });
    await first.publish([message('jobs.x', 1)]);
    await (await nextDelivery(sub)).deadLetter('unrecoverable', { error: 'boom' });
    await first.close();

    const second = transport();
    const records = await second.deadLetters.list();
    expect(records.map((d) => [d.group, d.reason, d.error, d.message.id])).toEqual([
      ['w', 'unrecoverable', 'boom', 'm-1'],
    ]);
  });
});
