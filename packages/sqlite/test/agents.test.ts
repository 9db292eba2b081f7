import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { agentConformance } from '@agentbus/conformance';
import { sqliteTransport } from '@agentbus/sqlite';
import { afterAll } from 'vitest';

const dir = mkdtempSync(join(tmpdir(), 'agentbus-agents-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

// Every bus opens its own connection to one file, as processes on one machine would.
const path = join(dir, 'bus.db');
agentConformance({ name: 'SQLite', open: () => sqliteTransport({ path }) });
