import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { amqpTransport } from '@agentbus/amqp';
import { sagaTransportScenario, serverSkipReason } from '@agentbus/conformance';
import { sqliteSagaRepository } from '@agentbus/sqlite';
import { afterAll } from 'vitest';
import { AMQP_URL, deleteNamespace, testNamespace } from './helpers.js';

const skipReason = await serverSkipReason('RabbitMQ', AMQP_URL, 5672);
const namespace = testNamespace('saga');
const dir = mkdtempSync(join(tmpdir(), 'agentbus-amqp-saga-'));
afterAll(async () => {
  rmSync(dir, { recursive: true, force: true });
  if (!skipReason) await deleteNamespace(namespace);
});

sagaTransportScenario({
  name: 'RabbitMQ (sagas in SQLite)',
  open: () => amqpTransport({ url: AMQP_URL, namespace }),
  repository: () => sqliteSagaRepository({ path: join(dir, 'sagas.db') }),
  skipReason,
});
