import { groupChatConformance, serverSkipReason } from '@agentbus/conformance';
import { natsTransport } from '@agentbus/nats';
import { afterAll } from 'vitest';
import { deleteNamespace, NATS_URL, testNamespace } from './helpers.js';

const skipReason = await serverSkipReason('NATS', NATS_URL, 4222);
const namespace = testNamespace('gc');
afterAll(async () => {
  if (!skipReason) await deleteNamespace(namespace);
});

groupChatConformance({
  name: 'NATS JetStream',
  open: () => natsTransport({ url: NATS_URL, namespace }),
  skipReason,
});
