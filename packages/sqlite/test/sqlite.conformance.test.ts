import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { transportConformance } from '@agentbus/conformance';
import { sqliteTransport } from '@agentbus/sqlite';
import { afterAll } from 'vitest';

const dir = mkdtempSync(join(tmpdir(), 'agentbus-conformance-'));
const path = join(dir, 'bus.db');
afterAll(() => rmSync(dir, { recursive: true, force: true }));

transportConformance({
  name: 'sqlite',
  // Every open() is a new connection to the same file, as a second process would have.
  open: () => sqliteTransport({ path, pollIntervalMs: 10 }),
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
  childArg: path,
  // The child's ephemeralTtlMs (1 s) + this process's sweepIntervalMs (1 s), with room to spare.
  ephemeralCrashBoundMs: 10_000,
});
