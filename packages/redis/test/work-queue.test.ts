import { serverSkipReason, workQueueConformance } from '@agentbus/conformance';
import { redisTransport } from '@agentbus/redis';
import { afterAll } from 'vitest';
import { deleteKeys, REDIS_URL, testPrefix } from './helpers.js';

const skipReason = await serverSkipReason('Redis', REDIS_URL, 6379);
const keyPrefix = testPrefix('wq');
afterAll(async () => {
  if (!skipReason) await deleteKeys(keyPrefix);
});

workQueueConformance({
  name: 'Redis',
  open: () => redisTransport({ url: REDIS_URL, keyPrefix, pollIntervalMs: 50 }),
  skipReason,
});
