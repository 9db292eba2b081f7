import { serverSkipReason, workQueueConformance } from '@agentbus/conformance';
import { natsTransport } from '@agentbus/nats';
import { afterAll } from 'vitest';
import { deleteNamespace, NATS_URL, testNamespace } from './helpers.js';

const skipReason = await serverSkipReason('NATS', NATS_URL, 4222);
const namespace = testNamespace('wq');
afterAll(async () => {
  if (!skipReason) await deleteNamespace(namespace);
});

workQueueConformance({
  name: 'NATS JetStream',
  open: () => natsTransport({ url: NATS_URL, namespace }),
  skipReason,
});
