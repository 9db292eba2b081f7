import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { sagaCrashRun } from '@agentbus/conformance';
import { afterAll, expect, it } from 'vitest';
import * as fixture from './fixtures/saga-crash-fixture.js';

const dir = mkdtempSync(join(tmpdir(), 'agentbus-saga-crash-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

it('saga crash test: 50 sagas, the orchestrator SIGKILLed 8 times at random points: every saga completed or fully compensated', async () => {
  const result = await sagaCrashRun({
    fixture,
    fixtureModule: fileURLToPath(new URL('./fixtures/saga-crash-fixture.ts', import.meta.url)),
    fixtureArg: dir,
    sagas: 50,
    kills: 8,
  });
  console.log(`sqlite saga crash: ${JSON.stringify(result)}`);
  expect(result.sagas).toBe(50);
  expect(result.unfinished).toBe(0);
  expect(result.failed).toBe(0);
  expect(result.halfDone).toEqual([]);
  expect(result.wrongOutcome).toEqual([]);
  expect(result.completed + result.compensated).toBe(50);
  expect(result.compensated).toBe(17); // every third saga is designed to fail
  expect(result.killPoints).toHaveLength(8);
  expect(result.interruptedSteps).toBeGreaterThan(0); // the kills did cut steps short
}, 120_000);
