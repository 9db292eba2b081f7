import { amqpTransport } from '@agentbus/amqp';
import { agentTaskConformance, serverSkipReason } from '@agentbus/conformance';
import { afterAll } from 'vitest';
import { AMQP_URL, deleteNamespace, testNamespace } from './helpers.js';

const skipReason = await serverSkipReason('RabbitMQ', AMQP_URL, 5672);
const namespace = testNamespace('at');
afterAll(async () => {
  if (!skipReason) await deleteNamespace(namespace);
});

// The tasks in an in-process memory store; executor and callers on connections of their own.
agentTaskConformance({ name: 'RabbitMQ', open: () => amqpTransport({ url: AMQP_URL, namespace }), skipReason });
