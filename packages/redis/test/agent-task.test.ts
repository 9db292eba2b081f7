import { agentTaskConformance, serverSkipReason } from '@agentbus/conformance';
import { silentLogger } from '@agentbus/core';
import { redisEventStore, redisTransport } from '@agentbus/redis';
import { afterAll } from 'vitest';
import { deleteKeys, REDIS_URL, testPrefix } from './helpers.js';

const skipReason = await serverSkipReason('Redis', REDIS_URL, 6379);
const keyPrefix = testPrefix('at');
afterAll(async () => {
  if (!skipReason) await deleteKeys(keyPrefix);
});

// The tasks are in Redis too: each executor and caller reads and appends through a connection of its own.
agentTaskConformance({
  name: 'Redis',
  open: () => redisTransport({ url: REDIS_URL, keyPrefix, pollIntervalMs: 50 }),
  openStore: () => redisEventStore({ url: REDIS_URL, keyPrefix: `${keyPrefix}:es`, logger: silentLogger }),
  skipReason,
});
