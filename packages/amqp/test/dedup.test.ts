import { amqpTransport } from '@agentbus/amqp';
import { dedupScenario, serverSkipReason } from '@agentbus/conformance';
import { createBus, memoryIdempotencyStore } from '@agentbus/core';
import { afterAll, expect, it } from 'vitest';
import { AMQP_URL, deleteNamespace, testNamespace } from './helpers.js';

const skipReason = await serverSkipReason('RabbitMQ', AMQP_URL, 5672);
const namespace = testNamespace('dedup');
afterAll(async () => {
  if (!skipReason) await deleteNamespace(namespace);
});

it.skipIf(skipReason)(
  'dedup on RabbitMQ: every message delivered three times, side effect once per group',
  async () => {
    const bus = createBus({ transport: amqpTransport({ url: AMQP_URL, namespace }) });
    const result = await dedupScenario({
      bus,
      store: memoryIdempotencyStore(),
      topic: 'dedup.amqp',
      groups: ['billing', 'audit'],
    });
    expect([...result.effects.values()].every((n) => n === 1)).toBe(true);
    expect(result.effects.size).toBe(100);
    await bus.close();
  },
);
