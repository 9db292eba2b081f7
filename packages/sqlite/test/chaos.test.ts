import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chaosRun } from '@agentbus/conformance';
import { afterAll, expect, it } from 'vitest';
import * as fixture from './fixtures/chaos-fixture.js';

const dir = mkdtempSync(join(tmpdir(), 'agentbus-chaos-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

it('retry + dedup + sequencing: 20,000 messages, 10% handler failures, 10 SIGKILLs: every effect once, in workflow order', async () => {
  const result = await chaosRun({
    fixture,
    fixtureModule: fileURLToPath(new URL('./fixtures/chaos-fixture.ts', import.meta.url)),
    fixtureArg: dir,
    messages: 20_000,
    workflows: 100,
    kills: 10,
    failureRate: 0.1,
  });
  console.log(`sqlite chaos: ${JSON.stringify(result)}`);
  expect(result.missing).toBe(0);
  expect(result.duplicates).toBe(0);
  expect(result.effects).toBe(20_000);
  expect(result.outOfOrder).toBe(0);
  expect(result.killPoints).toHaveLength(10);
  expect(result.failures).toBeGreaterThan(1_000); // about 10% of some 20,000+ handler calls
  expect(result.deadLetters).toBe(0);
}, 600_000);
