import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { securityAttackConformance } from '@agentbus/conformance';
import { sqliteTransport } from '@agentbus/sqlite';
import { afterAll } from 'vitest';

const dir = mkdtempSync(join(tmpdir(), 'agentbus-sec-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

// The consumer, the sender and the attacker are separate clients of one file, as separate processes would be.
securityAttackConformance({
  name: 'SQLite',
  open: () => sqliteTransport({ path: join(dir, 'bus.db'), pollIntervalMs: 10 }),
});
