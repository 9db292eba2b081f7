import { fileURLToPath } from 'node:url';
import { crashSoak, serverSkipReason } from '@agentbus/conformance';
import { natsTransport } from '@agentbus/nats';
import { afterAll, expect, it } from 'vitest';
import { deleteNamespace, NATS_URL, testNamespace } from './helpers.js';

const namespace = testNamespace('crash');
const skipReason = await serverSkipReason('NATS', NATS_URL, 4222);
afterAll(async () => {
  if (!skipReason) await deleteNamespace(namespace);
});

it.skipIf(skipReason)(
  'loses nothing when a consumer process is SIGKILLed 10 times while working through 10,000 messages',
  async () => {
    const result = await crashSoak({
      open: () => natsTransport({ url: NATS_URL, namespace }),
      childModule: fileURLToPath(new URL('./fixtures/child-transport.ts', import.meta.url)),
      childArg: JSON.stringify({ url: NATS_URL, namespace }),
      messages: 10_000,
      kills: 10,
      ackTimeoutMs: 1_000,
    });
    console.log(`nats crash soak: ${JSON.stringify(result)}`);
    expect(result.processed).toBe(10_000);
    expect(result.kills).toBe(10);
    expect(result.killPoints).toHaveLength(10);
    expect(result.deadLetters).toBe(0);
  },
  300_000,
);
