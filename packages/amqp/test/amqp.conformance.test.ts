import { fileURLToPath } from 'node:url';
import { amqpTransport } from '@agentbus/amqp';
import { serverSkipReason, transportConformance } from '@agentbus/conformance';
import { afterAll } from 'vitest';
import { AMQP_URL, deleteNamespace, testNamespace } from './helpers.js';

const skipReason = await serverSkipReason('RabbitMQ', AMQP_URL, 5672);
const childModule = fileURLToPath(new URL('./fixtures/child-transport.ts', import.meta.url));

// Quorum queues (the default): everything but priority, which quorum queues lack on RabbitMQ 3.10.
// Classic queues with x-max-priority: the whole suite, priority included.
for (const queueType of ['quorum', 'classic'] as const) {
  const namespace = testNamespace(`conformance-${queueType}`);
  afterAll(async () => {
    if (!skipReason) await deleteNamespace(namespace);
  });
  transportConformance({
    name: `amqp (${queueType} queues)`,
    // Every open() is a new connection to the same broker and namespace, as a second process would have.
    open: () => amqpTransport({ url: AMQP_URL, namespace, queueType }),
    capabilities: {
      persistent: true,
      crossProcess: true,
      priority: queueType === 'classic',
      delayedDelivery: true,
      ttl: true,
      wildcards: true,
      deadLetterReplay: true,
    },
    // No routeCount: AMQP cannot query bindings.
    methods: { routeCount: false, groupStats: true },
    childModule,
    childArg: JSON.stringify({ url: AMQP_URL, namespace, queueType }),
    // Exclusive queues go when the killed child's socket closes (at the latest after two missed
    // heartbeats, 10 s).
    ephemeralCrashBoundMs: 15_000,
    skipReason,
  });
}
