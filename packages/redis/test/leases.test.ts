import { serverSkipReason, until } from '@agentbus/conformance';
import type { RawDelivery, TransportMessage } from '@agentbus/core';
import { type RedisTransport, redisTransport } from '@agentbus/redis';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deleteKeys, REDIS_URL, testPrefix } from './helpers.js';

const skipReason = await serverSkipReason('Redis', REDIS_URL, 6379);
const keyPrefix = testPrefix('leases');

function messages(topic: string, n: number, from = 0): TransportMessage[] {
  return Array.from({ length: n }, (_, i) => ({
    id: `${topic}#${from + i}`,
    topic,
    body: Buffer.from(String(from + i)),
    headers: {},
    priority: 4,
  }));
}

describe.skipIf(skipReason)('Redis leases and fairness', () => {
  const open: RedisTransport[] = [];
  let redis: Redis;
  const transport = () => {
    const t = redisTransport({ url: REDIS_URL, keyPrefix, pollIntervalMs: 50, trimIntervalMs: 0 });
    open.push(t);
    return t;
  };
  beforeAll(() => {
    redis = new Redis(REDIS_URL);
  });
  afterAll(async () => {
    for (const t of open) await t.close();
    redis.disconnect();
    await deleteKeys(keyPrefix);
  });

  it('a transport closed while a claim is out gives the claimed messages back at once', async () => {
    const topic = 'leases.close';
    const a = transport();
    const sub = await a.subscribe(topic, { group: 'g', prefetch: 5, ackTimeoutMs: 60_000 });
    const first = sub[Symbol.asyncIterator]();
    await a.publish(messages(topic, 1, 100));
    await (await first.next()).value?.ack(); // connections are up and warm
    await a.publish(messages(topic, 5));
    const pending = first.next(); // a claim goes out …
    await new Promise((r) => setImmediate(r));
    await a.close(); // … and the transport closes (connections too) before it returns
    await pending.catch(() => {});
    const b = transport();
    const again = b.subscribe(topic, { group: 'g', prefetch: 5, ackTimeoutMs: 60_000 });
    const it = (await again)[Symbol.asyncIterator]();
    const got: RawDelivery[] = [];
    const started = Date.now();
    while (got.length < 5) {
      const r = await it.next();
      if (!r.done) got.push(r.value);
    }
    // Long before the 60 s lease would have run out.
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(new Set(got.map((d) => d.message.id)).size).toBe(5);
    for (const d of got) await d.ack();
  });

  it('reclaims a crashed consumer’s messages even behind many renewed leases of another consumer', async () => {
    const topic = 'leases.reclaim';
    const ackTimeoutMs = 400;
    const holder = transport();
    const hold = await holder.subscribe(topic, { group: 'g', prefetch: 12, ackTimeoutMs });
    await holder.publish(messages(topic, 12));
    // The holder leases 12 and keeps them (its buffered deliveries are renewed).
    const held = await hold[Symbol.asyncIterator]().next();
    const renew = setInterval(() => void held.value?.extend(ackTimeoutMs), ackTimeoutMs / 4);
    try {
      const crashed = transport();
      const dead = await crashed.subscribe(topic, { group: 'g', prefetch: 3, ackTimeoutMs });
      await crashed.publish(messages(topic, 3, 100));
      const deadIt = dead[Symbol.asyncIterator]();
      for (let i = 0; i < 3; i++) await deadIt.next(); // taken, never settled nor renewed
      const rescuer = transport();
      const rescue = await rescuer.subscribe(topic, { group: 'g', prefetch: 1, ackTimeoutMs });
      const it = rescue[Symbol.asyncIterator]();
      const got: string[] = [];
      while (got.length < 3) {
        const r = await it.next();
        if (r.done) break;
        got.push(r.value.message.id);
        expect(r.value.attempt).toBe(2);
        await r.value.ack();
      }
      expect(got.sort()).toEqual([`${topic}#100`, `${topic}#101`, `${topic}#102`]);
    } finally {
      clearInterval(renew);
    }
  }, 30_000);

  it('a pattern subscription takes topics in turn, so a busy topic does not starve a quiet one', async () => {
    const t = transport();
    const sub = await t.subscribe('fair.*', { group: 'g', prefetch: 10, ackTimeoutMs: 30_000 });
    await t.publish(messages('fair.busy', 300));
    await t.publish(messages('fair.quiet', 1));
    const it = sub[Symbol.asyncIterator]();
    let handled = 0;
    for (;;) {
      const r = await it.next();
      if (r.done) throw new Error('subscription ended');
      handled++;
      await r.value.ack();
      if (r.value.message.topic === 'fair.quiet') break;
    }
    expect(handled).toBeLessThan(60);
  });

  it('registers a topic again on the next publish when Redis lost the registry', async () => {
    const t = transport();
    await t.publish(messages('lost.topic', 1));
    expect(await redis.sismember(t.keys.topics, 'lost.topic')).toBe(1);
    await redis.srem(t.keys.topics, 'lost.topic'); // as after a restart that lost the last second
    await t.publish(messages('lost.topic', 1, 1));
    await until(
      async () => (await redis.sismember(t.keys.topics, 'lost.topic')) === 1,
      5_000,
      'the topic registered again',
    );
  });
});
