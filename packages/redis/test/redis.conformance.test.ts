import { fileURLToPath } from 'node:url';
import { serverSkipReason, transportConformance } from '@agentbus/conformance';
import { redisTransport } from '@agentbus/redis';
import { afterAll } from 'vitest';
import { deleteKeys, REDIS_URL, testPrefix } from './helpers.js';

const keyPrefix = testPrefix('conformance');
const skipReason = await serverSkipReason('Redis', REDIS_URL, 6379);
afterAll(async () => {
  if (!skipReason) await deleteKeys(keyPrefix);
});

transportConformance({
  name: 'redis',
  // Every open() is a new client of the same server and key prefix, as a second process would have.
  // A retention pass every 500 ms removes the ephemeral group of a killed child soon.
  open: () => redisTransport({ url: REDIS_URL, keyPrefix, pollIntervalMs: 50, trimIntervalMs: 500 }),
  capabilities: {
    persistent: true,
    crossProcess: true,
    priority: true,
    delayedDelivery: true,
    ttl: true,
    wildcards: true,
    deadLetterReplay: true,
  },
  methods: { routeCount: true, groupStats: true },
  childModule: fileURLToPath(new URL('./fixtures/child-transport.ts', import.meta.url)),
  childArg: JSON.stringify({ url: REDIS_URL, keyPrefix }),
  // The child's ephemeralTtlMs (1 s) + a retention pass (every 500 ms), with room to spare.
  ephemeralCrashBoundMs: 15_000,
  skipReason,
});
