import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sagaBehaviourTests, sagaRepositoryContract } from '@agentbus/conformance';
import { sqliteSagaRepository, sqliteTransport } from '@agentbus/sqlite';
import { afterAll, expect, it } from 'vitest';

const dir = mkdtempSync(join(tmpdir(), 'agentbus-saga-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

sagaRepositoryContract({
  name: 'SQLite',
  open: (name) => sqliteSagaRepository({ path: join(dir, `${name}.db`) }),
  durable: true,
});

let buses = 0;
// Every repository of a test is a new connection to the test's file, as a restarted process opens it.
sagaBehaviourTests({
  name: 'SQLite',
  transport: () => sqliteTransport({ path: join(dir, `bus-${buses++}.db`), pollIntervalMs: 10 }),
  repository: (name) => sqliteSagaRepository({ path: join(dir, `sagas-${name}.db`) }),
});

it('keeps its table beside the transport’s in the bus file', async () => {
  const path = join(dir, 'shared.db');
  const transport = sqliteTransport({ path });
  await transport.connect();
  const repo = sqliteSagaRepository({ path });
  expect(
    await repo.create({
      id: 's',
      name: 'n',
      status: 'running',
      payload: {},
      steps: [],
      createdAtMs: 1,
      updatedAtMs: 1,
      version: 1,
    }),
  ).toBe(true);
  expect((await repo.list({ status: 'running' })).map((s) => s.id)).toEqual(['s']);
  repo.close();
  await transport.close();
});
