import { serverSkipReason, until } from '@agentbus/conformance';
import { redisIdempotencyStore } from '@agentbus/redis';
import { afterAll, describe, expect, it } from 'vitest';
import { deleteKeys, REDIS_URL, testPrefix } from './helpers.js';

const skipReason = await serverSkipReason('Redis', REDIS_URL, 6379);
const keyPrefix = testPrefix('idem');
afterAll(async () => {
  if (!skipReason) await deleteKeys(keyPrefix);
});

describe.skipIf(skipReason)('Redis idempotency store', () => {
  it('gives one claim to one of two processes, and expires claims and completions by itself', async () => {
    const a = redisIdempotencyStore({ url: REDIS_URL, keyPrefix: `${keyPrefix}:race` });
    const b = redisIdempotencyStore({ url: REDIS_URL, keyPrefix: `${keyPrefix}:race` });
    const results = await Promise.all(Array.from({ length: 10 }, (_, i) => (i % 2 ? a : b).begin('g\0s\0m', 200)));
    expect(results.filter((r) => r === 'new')).toHaveLength(1);
    // The claimer "died": its claim runs out in Redis, then the key can be claimed again.
    await until(async () => (await b.begin('g\0s\0m', 200)) === 'new', 5_000, 'the claim to expire');
    await b.complete('g\0s\0m', 60_000);
    await a.release('g\0s\0m'); // a release never undoes a completion
    expect(await a.begin('g\0s\0m', 200)).toBe('done');
    await a.close();
    await b.close();
  });
});
