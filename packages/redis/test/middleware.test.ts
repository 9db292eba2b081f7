import { middlewareConformance, serverSkipReason } from '@agentbus/conformance';
import { redisIdempotencyStore, redisSequenceStore, redisTransport } from '@agentbus/redis';
import { afterAll } from 'vitest';
import { deleteKeys, REDIS_URL, testPrefix } from './helpers.js';

const skipReason = await serverSkipReason('Redis', REDIS_URL, 6379);
const keyPrefix = testPrefix('middleware');
const stores: { close(): Promise<void> }[] = [];
afterAll(async () => {
  for (const s of stores) await s.close();
  if (!skipReason) await deleteKeys(keyPrefix);
});

middlewareConformance({
  name: 'Redis',
  open: () => redisTransport({ url: REDIS_URL, keyPrefix, pollIntervalMs: 50 }),
  // Dedup through the Redis store, shared by every process.
  store: () => {
    const s = redisIdempotencyStore({ url: REDIS_URL, keyPrefix: `${keyPrefix}:store` });
    stores.push(s);
    return s;
  },
  // Sequencing through the Redis store; its keys live under the file's prefix and go with it.
  sequenceStore: () => {
    const s = redisSequenceStore({ url: REDIS_URL, keyPrefix: `${keyPrefix}:seq` });
    stores.push(s);
    return s;
  },
  skipReason,
});
