import { eventRelayScenario, serverSkipReason } from '@agentbus/conformance';
import { natsTransport } from '@agentbus/nats';
import { afterAll } from 'vitest';
import { deleteNamespace, NATS_URL, testNamespace } from './helpers.js';

const skipReason = await serverSkipReason('NATS', NATS_URL, 4222);
const namespace = testNamespace('eventsourcing');
afterAll(async () => {
  if (!skipReason) await deleteNamespace(namespace);
});

// Events appended to a memory event store, relayed over NATS JetStream to a read model.
eventRelayScenario({ name: 'NATS JetStream', open: () => natsTransport({ url: NATS_URL, namespace }), skipReason });
