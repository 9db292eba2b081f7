import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sagaTransportScenario, serverSkipReason } from '@agentbus/conformance';
import { natsTransport } from '@agentbus/nats';
import { sqliteSagaRepository } from '@agentbus/sqlite';
import { afterAll } from 'vitest';
import { deleteNamespace, NATS_URL, testNamespace } from './helpers.js';

const skipReason = await serverSkipReason('NATS', NATS_URL, 4222);
const namespace = testNamespace('saga');
const dir = mkdtempSync(join(tmpdir(), 'agentbus-nats-saga-'));
afterAll(async () => {
  rmSync(dir, { recursive: true, force: true });
  if (!skipReason) await deleteNamespace(namespace);
});

sagaTransportScenario({
  name: 'NATS JetStream (sagas in SQLite)',
  open: () => natsTransport({ url: NATS_URL, namespace }),
  repository: () => sqliteSagaRepository({ path: join(dir, 'sagas.db') }),
  skipReason,
});
