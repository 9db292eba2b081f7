import { serverSkipReason } from '@agentbus/conformance';
import type { RawDelivery, Subscription, TransportMessage } from '@agentbus/core';
import { ConfigError } from '@agentbus/core';
import { type RedisTransport, redisTransport, resolveRedisOptions } from '@agentbus/redis';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deleteKeys, REDIS_URL, testPrefix } from './helpers.js';

const skipReason = await serverSkipReason('Redis', REDIS_URL, 6379);
const keyPrefix = testPrefix('retention');
let redis: Redis;
beforeAll(() => {
  if (!skipReason) redis = new Redis(REDIS_URL);
});
afterAll(async () => {
  if (skipReason) return;
  redis.disconnect();
  await deleteKeys(keyPrefix);
});

function messages(topic: string, n: number): TransportMessage[] {
  return Array.from({ length: n }, (_, i) => ({
    id: `m${i}`,
    topic,
    body: Buffer.from(String(i)),
    headers: {},
    priority: 4,
  }));
}

/** Takes `n` deliveries from a subscription. */
async function take(sub: Subscription<RawDelivery>, n: number): Promise<RawDelivery[]> {
  const it = sub[Symbol.asyncIterator]();
  const out: RawDelivery[] = [];
  while (out.length < n) {
    const r = await it.next();
    if (r.done) break;
    out.push(r.value);
  }
  return out;
}

describe.skipIf(skipReason)('Redis retention', () => {
  let t: RedisTransport;
  beforeAll(() => {
    t = redisTransport({ url: REDIS_URL, keyPrefix, trimIntervalMs: 0, pollIntervalMs: 50 });
  });
  afterAll(async () => {
    await t.close();
  });

  it('trims only what every group acknowledged, counting a group that has not read the stream yet', async () => {
    const topic = 'ret.orders';
    const stream = t.keys.stream(topic, 4);
    // Declared before publishing: both groups are owed every message.
    await (await t.subscribe(topic, { group: 'fast', prefetch: 100, ackTimeoutMs: 30_000 })).close();
    await (await t.subscribe(topic, { group: 'slow', prefetch: 100, ackTimeoutMs: 30_000 })).close();
    await t.publish(messages(topic, 100));

    const fast = await t.subscribe(topic, { group: 'fast', prefetch: 100, ackTimeoutMs: 30_000 });
    for (const d of await take(fast, 100)) await d.ack();
    await t.trim();
    // `slow` never read the stream: nothing may go.
    expect(await redis.xlen(stream)).toBe(100);

    const slow = await t.subscribe(topic, { group: 'slow', prefetch: 50, ackTimeoutMs: 30_000 });
    const got = await take(slow, 50);
    for (const d of got.slice(0, 30)) await d.ack();
    await t.trim();
    // Acked by both: the first 30. Pending for slow: 30–49. Undelivered for slow: 50–99.
    expect(await redis.xlen(stream)).toBe(70);

    for (const d of got.slice(30)) await d.ack();
    for (const d of await take(slow, 50)) await d.ack();
    await t.trim();
    expect(await redis.xlen(stream)).toBe(0);
    await fast.close();
    await slow.close();
  });

  it('trims a large backlog in chunks, exactly to the oldest entry still needed', async () => {
    const topic = 'ret.backlog';
    const stream = t.keys.stream(topic, 4);
    const sub = await t.subscribe(topic, { group: 'g', prefetch: 5000, ackTimeoutMs: 30_000 });
    for (let i = 0; i < 5; i++) await t.publish(messages(topic, 1000));
    const got = await take(sub, 5000);
    // Everything acked but entry 3456: several chunks of whole nodes go, then the exact rest.
    for (const [i, d] of got.entries()) if (i !== 3456) await d.ack();
    expect(await t.trim()).toBe(3456);
    expect(await redis.xlen(stream)).toBe(5000 - 3456);
    const [[oldest]] = (await redis.xrange(stream, '-', '+', 'COUNT', 1)) as [[string, string[]]];
    const [[pendingId]] = (await redis.xpending(stream, 'g', '-', '+', 1)) as [[string]];
    expect(oldest).toBe(pendingId);
    await got[3456]?.ack();
    expect(await t.trim()).toBe(5000 - 3456);
    expect(await redis.xlen(stream)).toBe(0);
    await sub.close();
  });

  it('keeps the oldest pending entry of a group even when newer ones were acked', async () => {
    const topic = 'ret.holes';
    const stream = t.keys.stream(topic, 4);
    const sub = await t.subscribe(topic, { group: 'g', prefetch: 10, ackTimeoutMs: 30_000 });
    await t.publish(messages(topic, 10));
    const got = await take(sub, 10);
    for (const d of got.slice(1)) await d.ack();
    await t.trim();
    expect(await redis.xlen(stream)).toBe(10);
    await got[0]?.ack();
    await t.trim();
    expect(await redis.xlen(stream)).toBe(0);
    await sub.close();
  });

  it('does not keep messages published to a topic no group is bound to', async () => {
    const topic = 'ret.nobody';
    await t.publish(messages(topic, 5));
    expect(await redis.xlen(t.keys.stream(topic, 4))).toBe(5);
    // The pass only trims below the time it read the registry (a group declared meanwhile keeps its messages).
    await new Promise((r) => setTimeout(r, 5));
    await t.trim();
    expect(await redis.xlen(t.keys.stream(topic, 4))).toBe(0);
  });
});

describe('Redis transport options', () => {
  it.each([
    [{ url: 'http://x' }, 'url'],
    [{ keyPrefix: 'a{b}' }, 'keyPrefix'],
    [{ pollIntervalMs: 0 }, 'pollIntervalMs'],
    [{ trimIntervalMs: -1 }, 'trimIntervalMs'],
    [{ retention: { maxAgeMs: -5 } }, 'retention.maxAgeMs'],
    [{ reconnect: { maxMs: 0 } }, 'reconnect.maxMs'],
    [{ pollInterval: 5 }, 'pollInterval'],
  ])('rejects %j with a ConfigError naming %s', (options, path) => {
    const err = (() => {
      try {
        redisTransport(options as never);
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).path).toBe(path);
  });

  it('has defaults for everything', () => {
    expect(resolveRedisOptions({})).toMatchObject({
      url: 'redis://127.0.0.1:6379',
      keyPrefix: 'agentbus',
      trimIntervalMs: 5_000,
    });
  });

  it('fails to connect to a server that is not there with a retryable ConnectionError', async () => {
    const t = redisTransport({ url: 'redis://127.0.0.1:1', reconnect: { maxMs: 10 } });
    await expect(t.connect()).rejects.toMatchObject({ code: 'CONNECTION', retryable: true });
    expect((await t.health(true)).status).toBe('fail');
    await t.close();
  });
});
