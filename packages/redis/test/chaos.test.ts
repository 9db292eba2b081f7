import { fileURLToPath } from 'node:url';
import { chaosRun, serverSkipReason } from '@agentbus/conformance';
import { afterAll, expect, it } from 'vitest';
import * as fixture from './fixtures/chaos-fixture.js';
import { deleteKeys, REDIS_URL, testPrefix } from './helpers.js';

const keyPrefix = testPrefix('chaos');
const skipReason = await serverSkipReason('Redis', REDIS_URL, 6379);
afterAll(async () => {
  if (!skipReason) await deleteKeys(keyPrefix);
});

it.skipIf(skipReason)(
  'retry + dedup + sequencing: 20,000 messages, 10% handler failures, 10 SIGKILLs: every effect once, in workflow order',
  async () => {
    const result = await chaosRun({
      fixture,
      fixtureModule: fileURLToPath(new URL('./fixtures/chaos-fixture.ts', import.meta.url)),
      fixtureArg: JSON.stringify({ url: REDIS_URL, keyPrefix }),
      messages: 20_000,
      workflows: 100,
      kills: 10,
      failureRate: 0.1,
    });
    console.log(`redis chaos: ${JSON.stringify(result)}`);
    expect(result.missing).toBe(0);
    expect(result.duplicates).toBe(0);
    expect(result.effects).toBe(20_000);
    expect(result.outOfOrder).toBe(0);
    expect(result.killPoints).toHaveLength(10);
    expect(result.failures).toBeGreaterThan(1_000);
    expect(result.deadLetters).toBe(0);
  },
  600_000,
);
