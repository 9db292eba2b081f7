import { agentTaskConformance, serverSkipReason } from '@agentbus/conformance';
import { natsTransport } from '@agentbus/nats';
import { afterAll } from 'vitest';
import { deleteNamespace, NATS_URL, testNamespace } from './helpers.js';

const skipReason = await serverSkipReason('NATS', NATS_URL, 4222);
const namespace = testNamespace('at');
afterAll(async () => {
  if (!skipReason) await deleteNamespace(namespace);
});

// The tasks in an in-process memory store; executor and callers on connections of their own.
agentTaskConformance({
  name: 'NATS JetStream',
  open: () => natsTransport({ url: NATS_URL, namespace }),
  skipReason,
});
