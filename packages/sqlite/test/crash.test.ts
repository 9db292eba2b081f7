import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { crashSoak } from '@agentbus/conformance';
import { sqliteTransport } from '@agentbus/sqlite';
import { afterAll, expect, it } from 'vitest';

const dir = mkdtempSync(join(tmpdir(), 'agentbus-crash-'));
const path = join(dir, 'bus.db');
afterAll(() => rmSync(dir, { recursive: true, force: true }));

it('loses nothing when a consumer process is SIGKILLed 10 times while working through 10,000 messages', async () => {
  const lines: string[] = [];
  const result = await crashSoak({
    open: () => sqliteTransport({ path, pollIntervalMs: 10 }),
    childModule: fileURLToPath(new URL('./fixtures/child-transport.ts', import.meta.url)),
    childArg: path,
    messages: 10_000,
    kills: 10,
    ackTimeoutMs: 1_000,
    log: (l) => lines.push(l),
  });
  console.log(`sqlite crash soak: ${JSON.stringify(result)}`);
  expect(result.processed).toBe(10_000);
  expect(result.kills).toBe(10);
  expect(result.killPoints).toHaveLength(10);
  expect(result.deadLetters).toBe(0);
}, 300_000);
