import { randomBytes } from 'node:crypto';
import { ClosedError, LAST_ERROR_MAX_BYTES, type RawDelivery, REPLAY_COUNT_HEADER } from '@agentbus/core';
import { expect } from 'vitest';
import type { ConformanceOptions, TestContext } from './context.js';
import { groupTests } from './group-tests.js';
import { firstOf, Reader, until } from './wait.js';

type Test = (name: string, fn: (c: TestContext) => Promise<void>, timeoutMs?: number) => void;

/** Delivery-contract tests against the raw Transport API. */
export function transportTests(options: ConformanceOptions, test: Test): void {
  const caps = options.capabilities;
  const sub = async (c: TestContext, pattern: string, group = c.group(), prefetch = 10) => {
    const t = await c.open();
    return { t, r: new Reader(await t.subscribe(pattern, { group, prefetch, ackTimeoutMs: c.ackTimeoutMs })) };
  };

  test('declares the capabilities the suite was told about', async (c) => {
    const t = await c.open();
    expect(t.capabilities).toEqual(options.capabilities);
    expect(typeof t.name).toBe('string');
  });

  test('round-trips payload, headers, id and attributes byte for byte', async (c) => {
    const topic = c.topic('rt.bytes');
    const { t, r } = await sub(c, topic);
    const body = randomBytes(4096);
    const expiresAtMs = Date.now() + 3_600_000;
    const sent = c.message(topic, {
      body,
      headers: {
        'content-type': 'application/x-test',
        traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
        'x-ünï': 'vålue ✓',
      },
      priority: 7,
      expiresAtMs,
    });
    await t.publish([sent]);
    const d = await r.expect();
    expect(Buffer.from(d.message.body).equals(body)).toBe(true);
    expect(d.message.id).toBe(sent.id);
    expect(d.message.topic).toBe(topic);
    expect(d.message.headers).toEqual(sent.headers);
    expect(d.message.priority).toBe(7);
    expect(d.message.expiresAtMs).toBe(expiresAtMs);
    expect(d.message.publishedAtMs).toBeGreaterThan(0);
    expect(d.attempt).toBe(1);
    expect(d.group).toBe(c.group());
    await d.ack();
  });

  test('an acked message is not delivered again', async (c) => {
    const topic = c.topic('ack');
    const { t, r } = await sub(c, topic);
    await t.publish([c.message(topic)]);
    const d = await r.expect();
    await d.ack();
    expect(d.settled).toBe(true);
    await d.ack(); // idempotent
    await d.nack(); // the first settle wins
    await r.expectNothing(c.ackTimeoutMs * 2);
  });

  test('a nacked message is redelivered with attempt + 1', async (c) => {
    const topic = c.topic('nack');
    const { t, r } = await sub(c, topic);
    const m = c.message(topic);
    await t.publish([m]);
    const d1 = await r.expect();
    await d1.nack({ error: 'try again' });
    const d2 = await r.expect();
    expect(d2.message.id).toBe(m.id);
    expect(d2.attempt).toBe(2);
    await d2.ack();
  });

  test('a redelivery carries the error of the nack before it as lastError; a lease that ran out leaves none', async (c) => {
    const topic = c.topic('lasterror');
    const group = c.group();
    const a = await sub(c, topic, group, 1);
    const m = c.message(topic);
    await a.t.publish([m]);
    const d1 = await a.r.expect();
    expect(d1.lastError).toBeUndefined();
    const error = 'HANDLER: model call failed — rate limited ✓';
    // Due after the close below (and after the pull requests of a JetStream subscription expire):
    // on a cross-process transport the redelivery goes to another client of the backend.
    await d1.nack({ delayMs: 2_000, error });
    await a.r.close();
    const b = await sub(c, topic, group, 2);
    const d2 = await b.r.expect(20_000);
    expect(d2.message.id).toBe(m.id);
    expect(d2.attempt).toBe(2);
    expect(d2.lastError).toBe(error);
    // Left unsettled: its lease runs out, and the delivery after it follows no nack.
    const d3 = await b.r.expect(c.ackTimeoutMs * 20);
    expect(d3.message.id).toBe(m.id);
    expect(d3.attempt).toBe(3);
    expect(d3.lastError).toBeUndefined();
    // (d2 stays unsettled: JetStream would still take a late ack of it while the client's copy of
    // its lease has not run out, which is not what this test is about.)
    // A nack without an error leaves none either.
    await d3.nack();
    const d4 = await b.r.expect();
    expect(d4.attempt).toBe(4);
    expect(d4.lastError).toBeUndefined();
    await d4.ack();
  });

  test('lastError keeps at most LAST_ERROR_MAX_BYTES of a long error, cut with an ellipsis', async (c) => {
    const topic = c.topic('lasterror.long');
    const { t, r } = await sub(c, topic);
    await t.publish([c.message(topic)]);
    const d1 = await r.expect();
    const error = `HANDLER: ${'✓'.repeat(2_000)}`;
    await d1.nack({ error });
    const d2 = await r.expect();
    const kept = d2.lastError ?? '';
    expect(Buffer.byteLength(kept)).toBeLessThanOrEqual(LAST_ERROR_MAX_BYTES);
    expect(Buffer.byteLength(kept)).toBeGreaterThan(LAST_ERROR_MAX_BYTES - 8);
    expect(kept.endsWith('…')).toBe(true);
    expect(error.startsWith(kept.slice(0, -1))).toBe(true);
    await d2.ack();
  });

  test('a delivery left unsettled when its subscription closes is redelivered with attempt + 1', async (c) => {
    const topic = c.topic('crash.close');
    const group = c.group();
    const a = await sub(c, topic, group);
    const m = c.message(topic);
    await a.t.publish([m]);
    const d1 = await a.r.expect();
    expect(d1.attempt).toBe(1);
    await a.r.close();
    await a.r.close(); // idempotent
    const b = await sub(c, topic, group);
    const d2 = await b.r.expect();
    expect(d2.message.id).toBe(m.id);
    expect(d2.attempt).toBe(2);
    await d2.ack();
  });

  test('a lease that is neither settled nor extended expires and the message goes to another consumer', async (c) => {
    const topic = c.topic('lease.expire');
    const group = c.group();
    const a = await sub(c, topic, group, 1);
    const b = await sub(c, topic, group, 1);
    await a.t.publish([c.message(topic)]);
    // Whichever consumer got it first holds it without settling.
    const first = await firstOf([a.r, b.r]);
    const readers = [a.r, b.r];
    const other = await readers[1 - first.index]!.take(c.ackTimeoutMs * 10);
    expect(other?.message.id).toBe(first.delivery.message.id);
    expect(other?.attempt).toBe(2);
    await other?.ack();
    await first.delivery.ack(); // stale: no effect, no error
  });

  test('extend() keeps a lease past the ack timeout', async (c) => {
    const topic = c.topic('lease.extend');
    const group = c.group();
    const a = await sub(c, topic, group, 1);
    const b = await sub(c, topic, group, 1);
    await a.t.publish([c.message(topic)]);
    const first = await firstOf([a.r, b.r]);
    const d = first.delivery;
    const timer = setInterval(() => void d.extend(c.ackTimeoutMs), c.ackTimeoutMs / 4);
    try {
      await [a.r, b.r][1 - first.index]!.expectNothing(c.ackTimeoutMs * 3);
    } finally {
      clearInterval(timer);
    }
    await d.ack();
  });

  test('competing consumers in a group share the work and no acked message is delivered twice', async (c) => {
    const topic = c.topic('compete');
    const group = c.group();
    const consumers = await Promise.all([sub(c, topic, group, 5), sub(c, topic, group, 5)]);
    const n = 200;
    await consumers[0]!.t.publish(Array.from({ length: n }, () => c.message(topic)));
    const seen = new Map<string, number>();
    const perConsumer = [0, 0];
    await Promise.all(
      consumers.map(async ({ r }, i) => {
        while ([...seen.values()].length < n) {
          const d = await r.take(50);
          if (!d) continue;
          seen.set(d.message.id, (seen.get(d.message.id) ?? 0) + 1);
          perConsumer[i]!++;
          // Yield so that the other consumer gets a turn, as real handlers do.
          await new Promise((res) => setTimeout(res, 1));
          await d.ack();
        }
      }),
    );
    expect(seen.size).toBe(n);
    expect([...seen.values()].every((k) => k === 1)).toBe(true);
    expect(perConsumer[0]).toBeGreaterThan(0);
    expect(perConsumer[1]).toBeGreaterThan(0);
  });

  test('every group gets its own copy (fan-out)', async (c) => {
    const topic = c.topic('fanout');
    const a = await sub(c, topic, c.group('a'));
    const b = await sub(c, topic, c.group('b'));
    const msgs = Array.from({ length: 5 }, () => c.message(topic));
    await a.t.publish(msgs);
    for (const { r } of [a, b]) {
      const got = await r.expectMany(5);
      expect(new Set(got.map((d) => d.message.id))).toEqual(new Set(msgs.map((m) => m.id)));
      for (const d of got) await d.ack();
    }
  });

  if (caps.wildcards) {
    test('matches * to one segment and > to the rest', async (c) => {
      const star = await sub(c, `${c.prefix}.orders.*.created`, c.group('star'));
      const tail = await sub(c, `${c.prefix}.orders.>`, c.group('tail'));
      const t = star.t;
      const topics = ['orders.eu.created', 'orders.eu.west.created', 'orders.us.updated', 'orders', 'other.eu.created'];
      await t.publish(topics.map((s) => c.message(c.topic(s), { headers: { s } })));
      const starGot = await star.r.expectMany(1);
      expect(starGot.map((d) => d.message.headers.s)).toEqual(['orders.eu.created']);
      const tailGot = await tail.r.expectMany(3);
      expect(new Set(tailGot.map((d) => d.message.headers.s))).toEqual(
        new Set(['orders.eu.created', 'orders.eu.west.created', 'orders.us.updated']),
      );
      for (const d of [...starGot, ...tailGot]) await d.ack();
      await star.r.expectNothing(100);
      await tail.r.expectNothing(100);
    });
  }

  if (caps.delayedDelivery) {
    test('a nack with delay is redelivered no earlier than the delay', async (c) => {
      const topic = c.topic('delay');
      const { t, r } = await sub(c, topic);
      await t.publish([c.message(topic)]);
      const d1 = await r.expect();
      const delayMs = 500;
      const nackedAt = Date.now();
      await d1.nack({ delayMs });
      const d2 = await r.expect(delayMs + 10_000);
      expect(Date.now() - nackedAt).toBeGreaterThanOrEqual(delayMs - 5);
      expect(d2.attempt).toBe(2);
      await d2.ack();
    });
  }

  if (caps.priority) {
    test('delivers higher priority first among waiting messages, FIFO within a priority', async (c) => {
      const topic = c.topic('prio');
      const group = c.group();
      const declare = await sub(c, topic, group);
      await declare.r.close();
      const prios = [1, 5, 9, 5, 0, 9, 4];
      const msgs = prios.map((priority, i) => c.message(topic, { priority, headers: { i: String(i) } }));
      await declare.t.publish(msgs);
      const { r } = await sub(c, topic, group, 1);
      const order: string[] = [];
      for (let k = 0; k < msgs.length; k++) {
        const d = await r.expect();
        order.push(`${d.message.priority}:${d.message.headers.i}`);
        await d.ack();
      }
      expect(order).toEqual(['9:2', '9:5', '5:1', '5:3', '4:6', '1:0', '0:4']);
    });
  }

  if (caps.ttl) {
    test('never delivers an expired message and dead-letters it with reason expired', async (c) => {
      const topic = c.topic('ttl');
      const group = c.group();
      const declare = await sub(c, topic, group);
      await declare.r.close();
      const soon = Date.now() + 150;
      const expired = c.message(topic, { expiresAtMs: soon });
      const past = c.message(topic, { expiresAtMs: Date.now() - 1000 });
      const live = c.message(topic, { expiresAtMs: Date.now() + 3_600_000 });
      await declare.t.publish([expired, past, live]);
      await until(() => Date.now() > soon + 20, 5000, 'expiry');
      const { t, r } = await sub(c, topic, group);
      const d = await r.expect();
      expect(d.message.id).toBe(live.id);
      await d.ack();
      await r.expectNothing(200);
      await until(async () => (await t.deadLetters.list({ group })).length === 2, 5000, 'two expired dead letters');
      const dead = await t.deadLetters.list({ group });
      expect(dead.map((x) => x.reason)).toEqual(['expired', 'expired']);
      expect(new Set(dead.map((x) => x.message.id))).toEqual(new Set([expired.id, past.id]));
    });
  }

  test('prefetch bounds the unsettled deliveries of a subscription', async (c) => {
    const topic = c.topic('prefetch');
    const { t, r } = await sub(c, topic, c.group(), 3);
    await t.publish(Array.from({ length: 10 }, () => c.message(topic)));
    const held = await r.expectMany(3);
    await r.expectNothing(200);
    await held[0]!.ack();
    const more = await r.expect();
    await r.expectNothing(100);
    for (const d of [...held.slice(1), more]) await d.ack();
    for (let k = 0; k < 6; k++) await (await r.expect()).ack();
    await r.expectNothing(50);
  });

  test('publishes a batch', async (c) => {
    const topic = c.topic('batch');
    const { t, r } = await sub(c, topic);
    const msgs = Array.from({ length: 100 }, () => c.message(topic));
    await t.publish(msgs);
    const ids = new Set<string>();
    for (let k = 0; k < 100; k++) {
      const d = await r.expect();
      ids.add(d.message.id);
      await d.ack();
    }
    expect(ids).toEqual(new Set(msgs.map((m) => m.id)));
  });

  test('a group declared before publishing receives messages published while no subscriber ran', async (c) => {
    const topic = c.topic('late');
    const group = c.group();
    const declare = await sub(c, topic, group);
    await declare.r.close();
    const m = c.message(topic);
    await declare.t.publish([m]);
    const later = await sub(c, topic, group);
    const d = await later.r.expect();
    expect(d.message.id).toBe(m.id);
    expect(d.attempt).toBe(1);
    await d.ack();
  });

  test('dead-letters with reason, error and original topic; lists, gets, replays and purges', async (c) => {
    const topic = c.topic('dlq.orders');
    const group = c.group();
    const { t, r } = await sub(c, topic, group);
    const msgs = [c.message(topic), c.message(topic)];
    await t.publish(msgs);
    const got = await r.expectMany(2);
    const byId = new Map<string, RawDelivery>(got.map((d) => [d.message.id, d]));
    await byId.get(msgs[0]!.id)!.deadLetter('poison', { error: 'HANDLER: boom' });
    await byId.get(msgs[1]!.id)!.deadLetter('other', { error: 'x' });
    const listed = await t.deadLetters.list({ group, reason: 'poison' });
    expect(listed).toHaveLength(1);
    const rec = listed[0]!;
    expect(rec.message.id).toBe(msgs[0]!.id);
    expect(rec.message.topic).toBe(topic);
    expect(rec.group).toBe(group);
    expect(rec.error).toBe('HANDLER: boom');
    expect(rec.attempts).toBe(1);
    expect(Buffer.from(rec.message.body).equals(Buffer.from(msgs[0]!.body))).toBe(true);
    expect(await t.deadLetters.get(rec.id)).toMatchObject({ id: rec.id, reason: 'poison' });
    expect(await t.deadLetters.list({ topic: `${c.prefix}.dlq.>` })).toHaveLength(2);
    expect(await t.deadLetters.list({ topic: `${c.prefix}.nothing.>` })).toHaveLength(0);

    expect(await t.deadLetters.replay(rec.id)).toBe(1);
    const again = await r.expect();
    expect(again.message.id).toBe(msgs[0]!.id);
    expect(again.message.topic).toBe(topic);
    expect(again.attempt).toBe(1);
    expect(again.message.headers[REPLAY_COUNT_HEADER]).toBe('1');
    await again.ack();
    expect(await t.deadLetters.get(rec.id)).toBeUndefined();

    expect(await t.deadLetters.purge({ group })).toBe(1);
    expect(await t.deadLetters.list({ group })).toHaveLength(0);
  });

  test('reports health, deep with a round trip', async (c) => {
    const t = await c.open();
    const h = await t.health(true);
    expect(h.status).toBe('pass');
    expect(h.transport).toBe(t.name);
    expect(typeof h.latencyMs).toBe('number');
  });

  groupTests(options, test);

  test('close is idempotent and later calls reject with ClosedError', async (c) => {
    const t = await c.open();
    await t.close();
    await t.close();
    await expect(t.publish([c.message(c.topic('closed'))])).rejects.toBeInstanceOf(ClosedError);
    await expect(
      t.subscribe(c.topic('closed'), { group: c.group(), prefetch: 1, ackTimeoutMs: 1000 }),
    ).rejects.toBeInstanceOf(ClosedError);
  });
}
