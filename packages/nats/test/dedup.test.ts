import { dedupScenario, serverSkipReason } from '@agentbus/conformance';
import { createBus, memoryIdempotencyStore } from '@agentbus/core';
import { natsTransport } from '@agentbus/nats';
import { afterAll, expect, it } from 'vitest';
import { deleteNamespace, NATS_URL, testNamespace } from './helpers.js';

const skipReason = await serverSkipReason('NATS', NATS_URL, 4222);
const namespace = testNamespace('dedup');
afterAll(async () => {
  if (!skipReason) await deleteNamespace(namespace);
});

it.skipIf(skipReason)(
  'dedup on NATS JetStream: every message delivered three times, side effect once per group',
  async () => {
    const bus = createBus({ transport: natsTransport({ url: NATS_URL, namespace }) });
    const result = await dedupScenario({
      bus,
      store: memoryIdempotencyStore(),
      topic: 'dedup.nats',
      groups: ['billing', 'audit'],
    });
    expect([...result.effects.values()].every((n) => n === 1)).toBe(true);
    expect(result.effects.size).toBe(100);
    await bus.close();
  },
);
