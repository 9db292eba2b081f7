import { securityAttackConformance, serverSkipReason } from '@agentbus/conformance';
import { redisTransport } from '@agentbus/redis';
import { afterAll } from 'vitest';
import { deleteKeys, REDIS_URL, testPrefix } from './helpers.js';

const skipReason = await serverSkipReason('Redis', REDIS_URL, 6379);
const keyPrefix = testPrefix('security');
afterAll(async () => {
  if (!skipReason) await deleteKeys(keyPrefix);
});

// The consumer, the sender and the attacker are separate clients of one server, as separate processes would be.
securityAttackConformance({
  name: 'Redis',
  open: () => redisTransport({ url: REDIS_URL, keyPrefix, pollIntervalMs: 50 }),
  skipReason,
});
