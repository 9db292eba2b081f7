import { serverSkipReason, until } from '@agentbus/conformance';
import {
  ConfigError,
  ConnectionError,
  createBus,
  memoryTransport,
  RateLimitedError,
  rateLimit,
  ValidationError,
} from '@agentbus/core';
import { type RedisRateLimiter, redisRateLimiter } from '@agentbus/redis';
import { Redis } from 'ioredis';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { deleteKeys, REDIS_URL, testPrefix } from './helpers.js';

const skipReason = await serverSkipReason('Redis', REDIS_URL, 6379);
const keyPrefix = testPrefix('ratelimit');
let n = 0;
/** A key prefix of each test's own. */
const fresh = () => `${keyPrefix}:${++n}`;

const open: { close(): Promise<void> }[] = [];
function limiter(prefix: string): RedisRateLimiter {
  const l = redisRateLimiter({ url: REDIS_URL, keyPrefix: prefix });
  open.push(l);
  return l;
}
afterEach(async () => {
  for (const l of open.splice(0)) await l.close();
});
afterAll(async () => {
  if (!skipReason) await deleteKeys(keyPrefix);
});

/** Practically no refill during a test: one token per 1,000 s. */
const SLOW = 0.001;

describe.skipIf(skipReason)('Redis rate limiter', () => {
  it('lets two processes (two connections) share one budget, granting exactly its capacity under a race', async () => {
    const prefix = fresh();
    const a = limiter(prefix);
    const b = limiter(prefix);
    const shape = { cost: 1, capacity: 5, refillPerSecond: SLOW };
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 ? a : b).take('agent:x', shape)));
    expect(results.filter((r) => r.allowed)).toHaveLength(5);
    const refused = results.filter((r) => !r.allowed);
    expect(refused).toHaveLength(15);
    // One token at 0.001 per second: about 1,000 s.
    for (const r of refused) expect(r.retryAfterMs).toBeGreaterThan(990_000);
    expect((await a.take('agent:y', shape)).allowed).toBe(true); // another key, another bucket
  });

  it('refills on the server clock', async () => {
    const l = limiter(fresh());
    const shape = { cost: 1, capacity: 2, refillPerSecond: 20 };
    expect((await l.take('k', shape)).allowed).toBe(true);
    expect((await l.take('k', shape)).allowed).toBe(true);
    const refused = await l.take('k', shape);
    expect(refused.allowed).toBe(false);
    expect(refused.retryAfterMs).toBeGreaterThan(0);
    expect(refused.retryAfterMs).toBeLessThanOrEqual(50);
    await until(async () => (await l.take('k', shape)).allowed, 5_000, 'a token refilled within 50 ms');
  });

  it('takes a cost at once, keeps a reserve, and refuses impossible takes without a round trip', async () => {
    const l = limiter(fresh());
    const shape = { capacity: 10, refillPerSecond: SLOW };
    const r1 = await l.take('k', { ...shape, cost: 6, reserved: 3 });
    expect(r1.allowed).toBe(true);
    expect(r1.remaining).toBeCloseTo(4, 2);
    expect((await l.take('k', { ...shape, cost: 2, reserved: 3 })).allowed).toBe(false);
    expect((await l.take('k', { ...shape, cost: 2 })).allowed).toBe(true); // no reserve for the highest priority
    await expect(l.take('k', { ...shape, cost: 8, reserved: 3 })).rejects.toBeInstanceOf(ValidationError);
    await expect(l.take('k', { ...shape, cost: 11 })).rejects.toBeInstanceOf(ValidationError);
    await expect(l.take('k', { ...shape, refillPerSecond: 0, cost: 1 })).rejects.toBeInstanceOf(ConfigError);
  });

  it('lets a bucket expire once it would be full again, and stores none for a take that leaves it full', async () => {
    const prefix = fresh();
    const l = limiter(prefix);
    const redis = new Redis(REDIS_URL);
    try {
      await l.take('k', { cost: 4, capacity: 10, refillPerSecond: 1 });
      const ttl = await redis.pttl(`${prefix}:k`);
      expect(ttl).toBeGreaterThan(3_000);
      expect(ttl).toBeLessThanOrEqual(4_000);
      await l.take('empty', { cost: 0, capacity: 10, refillPerSecond: 1 });
      expect(await redis.exists(`${prefix}:empty`)).toBe(0);
    } finally {
      redis.disconnect();
    }
  });

  it('shares the publish budget of the rate-limit middleware between two buses', async () => {
    const prefix = fresh();
    const client = new Redis(REDIS_URL);
    try {
      const shared = { capacity: 3, refillPerSecond: SLOW, on: 'publish' } as const;
      const busA = createBus({ transport: memoryTransport() });
      const busB = createBus({ transport: memoryTransport() });
      busA.use(rateLimit({ ...shared, limiter: limiter(prefix) }));
      // A client of the caller's own: the limiter leaves it open.
      const onClient = redisRateLimiter({ client, keyPrefix: prefix });
      busB.use(rateLimit({ ...shared, limiter: onClient }));
      await busA.publish('rl.shared', 1, { source: 'planner' });
      await busA.publish('rl.shared', 2, { source: 'planner' });
      await busB.publish('rl.shared', 3, { source: 'planner' });
      const err = await busB.publish('rl.shared', 4, { source: 'planner' }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(RateLimitedError);
      expect((err as RateLimitedError).retryAfterMs).toBeGreaterThan(990_000);
      await expect(busA.publish('rl.shared', 5, { source: 'planner' })).rejects.toBeInstanceOf(RateLimitedError);
      await busB.publish('rl.shared', 6, { source: 'writer' });
      await onClient.close();
      expect(await client.ping()).toBe('PONG');
      await busA.close();
      await busB.close();
    } finally {
      client.disconnect();
    }
  });

  it('fails closed with a retryable ConnectionError when Redis cannot be reached', async () => {
    const l = redisRateLimiter({ url: 'redis://127.0.0.1:1', keyPrefix: fresh() });
    try {
      const err = await l.take('k', { cost: 1, capacity: 1, refillPerSecond: 1 }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ConnectionError);
      expect((err as ConnectionError).retryable).toBe(true);
    } finally {
      await l.close();
    }
  });

  it('refuses bad options', () => {
    expect(() => redisRateLimiter({ keyPrefix: '' })).toThrow(ConfigError);
    expect(() => redisRateLimiter({ url: REDIS_URL, client: {} as never })).toThrow(/url or a client/);
  });
});
