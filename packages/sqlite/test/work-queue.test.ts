import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { workQueueConformance } from '@agentbus/conformance';
import { sqliteTransport } from '@agentbus/sqlite';
import { afterAll } from 'vitest';

const dir = mkdtempSync(join(tmpdir(), 'agentbus-wq-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

// Requesters and the replier are separate clients of one file, as separate processes would be.
workQueueConformance({
  name: 'SQLite',
  open: () => sqliteTransport({ path: join(dir, 'bus.db'), pollIntervalMs: 10 }),
});
