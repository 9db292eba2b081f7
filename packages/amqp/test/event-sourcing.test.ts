import { amqpTransport } from '@agentbus/amqp';
import { eventRelayScenario, serverSkipReason } from '@agentbus/conformance';
import { afterAll } from 'vitest';
import { AMQP_URL, deleteNamespace, testNamespace } from './helpers.js';

const skipReason = await serverSkipReason('RabbitMQ', AMQP_URL, 5672);
const namespace = testNamespace('eventsourcing');
afterAll(async () => {
  if (!skipReason) await deleteNamespace(namespace);
});

// Events appended to a memory event store, relayed over RabbitMQ to a read model.
eventRelayScenario({ name: 'RabbitMQ', open: () => amqpTransport({ url: AMQP_URL, namespace }), skipReason });
