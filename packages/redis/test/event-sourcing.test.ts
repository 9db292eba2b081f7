import { eventRelayScenario, serverSkipReason } from '@agentbus/conformance';
import { silentLogger } from '@agentbus/core';
import { redisEventStore, redisTransport } from '@agentbus/redis';
import { afterAll } from 'vitest';
import { deleteKeys, REDIS_URL, testPrefix } from './helpers.js';

const skipReason = await serverSkipReason('Redis', REDIS_URL, 6379);
const keyPrefix = testPrefix('event-sourcing');
afterAll(async () => {
  if (!skipReason) await deleteKeys(keyPrefix);
});

// Both ends on Redis: the events in a Redis event store, relayed over Redis Streams.
eventRelayScenario({
  name: 'Redis Streams',
  open: () => redisTransport({ url: REDIS_URL, keyPrefix: `${keyPrefix}:bus` }),
  store: () => redisEventStore({ url: REDIS_URL, keyPrefix: `${keyPrefix}:es`, logger: silentLogger }),
  skipReason,
});
