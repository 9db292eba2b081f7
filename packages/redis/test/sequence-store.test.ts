import { sequenceStoreContract, serverSkipReason } from '@agentbus/conformance';
import { idempotencyKey } from '@agentbus/core';
import { redisIdempotencyStore, redisSequenceStore } from '@agentbus/redis';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { deleteKeys, REDIS_URL, testPrefix } from './helpers.js';

const skipReason = await serverSkipReason('Redis', REDIS_URL, 6379);
const keyPrefix = testPrefix('seq');
afterAll(async () => {
  if (!skipReason) await deleteKeys(keyPrefix);
});

describe.skipIf(skipReason)('Redis stores', () => {
  sequenceStoreContract({
    name: 'Redis',
    open: (name) => redisSequenceStore({ url: REDIS_URL, keyPrefix: `${keyPrefix}:${name}` }),
    durable: true,
  });

  it('two connections never hand out the same sequence number', async () => {
    const a = redisSequenceStore({ url: REDIS_URL, keyPrefix: `${keyPrefix}:shared` });
    const b = redisSequenceStore({ url: REDIS_URL, keyPrefix: `${keyPrefix}:shared` });
    const got = await Promise.all(Array.from({ length: 200 }, (_, i) => (i % 2 ? a : b).nextSequence('w')));
    expect(new Set(got).size).toBe(200);
    await a.close();
    await b.close();
  });

  it('applies a side effect and the dedup completion in one MULTI', async () => {
    const client = new Redis(REDIS_URL);
    const store = redisIdempotencyStore({ client, keyPrefix: `${keyPrefix}:idem` });
    const key = idempotencyKey('g', { source: 'agent', id: 'm1' });
    expect(await store.begin(key, 30_000)).toBe('new');
    // A MULTI that fails as a whole (a command error inside a script aborts nothing, so use DISCARD).
    const discarded = store.completeIn(client.multi().rpush(`${keyPrefix}:effects`, 'm1'), key, 60_000);
    await discarded.discard();
    expect(await client.llen(`${keyPrefix}:effects`)).toBe(0);
    expect(await store.begin(key, 30_000)).toBe('busy');
    await store.completeIn(client.multi().rpush(`${keyPrefix}:effects`, 'm1'), key, 60_000).exec();
    expect(await client.llen(`${keyPrefix}:effects`)).toBe(1);
    expect(await store.begin(key, 30_000)).toBe('done');
    await store.close();
    client.disconnect();
  });
});
