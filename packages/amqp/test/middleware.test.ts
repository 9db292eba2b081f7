import { amqpTransport } from '@agentbus/amqp';
import { circuitBreakerScenario, handlerTimeoutScenario, serverSkipReason } from '@agentbus/conformance';
import { createBus, TimeoutError } from '@agentbus/core';
import { afterAll, describe, expect, it } from 'vitest';
import { AMQP_URL, deleteNamespace, testNamespace } from './helpers.js';

const skipReason = await serverSkipReason('RabbitMQ', AMQP_URL, 5672);
const namespace = testNamespace('middleware');
afterAll(async () => {
  if (!skipReason) await deleteNamespace(namespace);
});
const open = () => amqpTransport({ url: AMQP_URL, namespace });

describe.skipIf(skipReason)('middleware on RabbitMQ', () => {
  it('handler timeout aborts the signal and the message is retried', async () => {
    const bus = createBus({ transport: open() });
    const r = await handlerTimeoutScenario(bus, 'mw.timeout', 'timeout-workers');
    expect(r.finishedAttempt).toBe(2);
    expect(r.abortReason).toBeInstanceOf(TimeoutError);
    await bus.close();
  });

  it('circuit breaker runs no handler while open and handles everything after', async () => {
    const bus = createBus({ transport: open() });
    const r = await circuitBreakerScenario(bus, 'mw.breaker', 'breaker-workers');
    expect(r.handled).toEqual([0, 1, 2, 3, 4]);
    expect(r.runsAfterOpen).toBe(5);
    expect(r.finalState).toBe('closed');
    await bus.close();
  });
});
