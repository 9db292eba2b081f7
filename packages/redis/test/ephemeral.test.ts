import { serverSkipReason, until } from '@agentbus/conformance';
import { ConfigError, type RawDelivery, type Subscription, type TransportMessage } from '@agentbus/core';
import { type RedisTransport, redisTransport } from '@agentbus/redis';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deleteKeys, REDIS_URL, testPrefix } from './helpers.js';

const skipReason = await serverSkipReason('Redis', REDIS_URL, 6379);
const keyPrefix = testPrefix('ephemeral');
let redis: Redis;
beforeAll(() => {
  if (!skipReason) redis = new Redis(REDIS_URL);
});
afterAll(async () => {
  if (skipReason) return;
  redis.disconnect();
  await deleteKeys(keyPrefix);
});

let n = 0;
function message(topic: string): TransportMessage {
  n++;
  return { id: `m${n}`, topic, body: Buffer.from(String(n)), headers: {}, priority: 4 };
}

async function take(sub: Subscription<RawDelivery>): Promise<RawDelivery> {
  const r = await sub[Symbol.asyncIterator]().next();
  if (r.done) throw new Error('subscription ended');
  return r.value;
}

/** Every key of the test prefix that belongs to `topic`. */
async function topicKeys(topic: string): Promise<string[]> {
  const out: string[] = [];
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${keyPrefix}:{${topic}}:*`, 'COUNT', 1000);
    cursor = next;
    out.push(...keys);
  } while (cursor !== '0');
  return out;
}

describe.skipIf(skipReason)('Redis ephemeral groups', () => {
  const open: RedisTransport[] = [];
  const transport = (ephemeralTtlMs?: number) => {
    const t = redisTransport({
      url: REDIS_URL,
      keyPrefix,
      pollIntervalMs: 50,
      trimIntervalMs: 0,
      ...(ephemeralTtlMs === undefined ? {} : { ephemeralTtlMs }),
    });
    open.push(t);
    return t;
  };
  const opts = { prefetch: 10, ackTimeoutMs: 30_000 };
  afterAll(async () => {
    await Promise.all(open.map((t) => t.close()));
  });

  it('a reply inbox leaves no key, registry entry or topic behind once its subscription closes', async () => {
    const t = transport();
    const topic = '_inbox.one';
    const sub = await t.subscribe(topic, { group: topic, ...opts, ephemeral: true });
    await t.publish([message(topic), message(topic), message(topic), message(topic)]);
    const [a, b, c] = [await take(sub), await take(sub), await take(sub)];
    await a?.nack({ delayMs: 60_000 }); // waits in the delayed set
    await b?.deadLetter('poison'); // a dead-letter stream
    await c?.nack(); // the retry stream
    await take(sub); // held when it closes
    expect(await t.groupStats(topic)).toEqual({ backlog: 2, inFlight: 1 });
    expect((await topicKeys(topic)).length).toBeGreaterThan(0);
    await sub.close();
    expect(await topicKeys(topic)).toEqual([]);
    expect(await redis.hexists(t.keys.groups, topic)).toBe(0);
    expect(await redis.sismember(t.keys.topics, topic)).toBe(0);
    expect(await redis.sismember(t.keys.deadLetters, t.keys.deadLetter(topic, topic))).toBe(0);
  });

  it('removes only its own consumer groups from a topic other groups read', async () => {
    const t = transport();
    const topic = 'eph.shared.orders';
    const durable = await t.subscribe(topic, { group: 'billing', ...opts });
    const eph = await t.subscribe('eph.shared.>', { group: 'eph-listener', ...opts, ephemeral: true });
    await t.publish([message(topic)]);
    await (await take(durable)).ack();
    await (await take(eph)).ack();
    const groups = async () =>
      ((await redis.xinfo('GROUPS', t.keys.stream(topic, 4))) as unknown[][]).map((g) => String(g[1])).sort();
    expect(await groups()).toEqual(['billing', 'eph-listener']);
    await eph.close();
    expect(await groups()).toEqual(['billing']);
    expect(await t.routeCount(topic)).toBe(1);
    await durable.close();
  });

  it('a group is durable or ephemeral, and an ephemeral group has one subscriber at a time', async () => {
    const a = transport();
    const b = transport();
    await (await a.subscribe('eph.kind', { group: 'kind-durable', ...opts })).close();
    await expect(b.subscribe('eph.kind', { group: 'kind-durable', ...opts, ephemeral: true })).rejects.toBeInstanceOf(
      ConfigError,
    );
    const inbox = await a.subscribe('eph.kind.inbox', { group: 'kind-inbox', ...opts, ephemeral: true });
    await expect(
      b.subscribe('eph.kind.inbox', { group: 'kind-inbox', ...opts, ephemeral: true }),
    ).rejects.toBeInstanceOf(ConfigError);
    await expect(b.subscribe('eph.kind.inbox', { group: 'kind-inbox', ...opts })).rejects.toBeInstanceOf(ConfigError);
    await inbox.close();
    await (await b.subscribe('eph.kind.inbox', { group: 'kind-inbox', ...opts })).close();
  });

  it('a group removed after its deadline passed (a stalled owner) is declared again by its next renewal and receives again', async () => {
    const owner = transport(600);
    const sweeper = transport();
    const topic = 'eph.stall';
    const sub = await owner.subscribe(topic, { group: 'stalled', ...opts, ephemeral: true });
    await owner.publish([message(topic)]);
    await (await take(sub)).ack();
    // As if the owner had missed its renewals: its deadline is in the past, and a pass removes it.
    const entry = JSON.parse((await redis.hget(owner.keys.groups, 'stalled')) as string) as { ephemeral: number };
    await redis.hset(owner.keys.groups, 'stalled', JSON.stringify({ ...entry, ephemeral: 1 }));
    expect(await sweeper.routeCount(topic)).toBe(0);
    await sweeper.trim();
    expect(await redis.hexists(owner.keys.groups, 'stalled')).toBe(0);
    // The next renewal (every 200 ms) declares it afresh.
    await until(async () => (await sweeper.routeCount(topic)) === 1, 5_000, 'the group declared again');
    const m = message(topic);
    await sweeper.publish([m]);
    const d = await take(sub);
    expect(d.message.id).toBe(m.id);
    expect(d.attempt).toBe(1);
    await d.ack();
    await sub.close();
    expect(await sweeper.routeCount(topic)).toBe(0);
  });
});
