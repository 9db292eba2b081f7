import { fileURLToPath } from 'node:url';
import { crashSoak, serverSkipReason } from '@agentbus/conformance';
import { redisTransport } from '@agentbus/redis';
import { afterAll, expect, it } from 'vitest';
import { deleteKeys, REDIS_URL, testPrefix } from './helpers.js';

const keyPrefix = testPrefix('crash');
const skipReason = await serverSkipReason('Redis', REDIS_URL, 6379);
afterAll(async () => {
  if (!skipReason) await deleteKeys(keyPrefix);
});

it.skipIf(skipReason)(
  'loses nothing when a consumer process is SIGKILLed 10 times while working through 10,000 messages',
  async () => {
    const result = await crashSoak({
      open: () => redisTransport({ url: REDIS_URL, keyPrefix, pollIntervalMs: 50 }),
      childModule: fileURLToPath(new URL('./fixtures/child-transport.ts', import.meta.url)),
      childArg: JSON.stringify({ url: REDIS_URL, keyPrefix }),
      messages: 10_000,
      kills: 10,
      ackTimeoutMs: 1_000,
    });
    console.log(`redis crash soak: ${JSON.stringify(result)}`);
    expect(result.processed).toBe(10_000);
    expect(result.kills).toBe(10);
    expect(result.killPoints).toHaveLength(10);
    expect(result.deadLetters).toBe(0);
  },
  300_000,
);
