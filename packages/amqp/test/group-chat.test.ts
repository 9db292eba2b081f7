import { amqpTransport } from '@agentbus/amqp';
import { groupChatConformance, serverSkipReason } from '@agentbus/conformance';
import { afterAll } from 'vitest';
import { AMQP_URL, deleteNamespace, testNamespace } from './helpers.js';

const skipReason = await serverSkipReason('RabbitMQ', AMQP_URL, 5672);
const namespace = testNamespace('gc');
afterAll(async () => {
  if (!skipReason) await deleteNamespace(namespace);
});

groupChatConformance({ name: 'RabbitMQ', open: () => amqpTransport({ url: AMQP_URL, namespace }), skipReason });
