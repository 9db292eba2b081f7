import { until } from '@agentbus/conformance';
import { ConfigError, createBus, ManualClock, memoryTransport, retryPolicy, ValidationError } from '@agentbus/core';
import { describe, expect, it } from 'vitest';

class BadRequest extends Error {}

describe('retry policy middleware', () => {
  it('dead-letters errors classed unrecoverable at once (by class and by code), and retries the others', async () => {
    const transport = memoryTransport();
    const bus = createBus({ transport });
    bus.use(retryPolicy({ unrecoverable: [BadRequest, 'VALIDATION'] }));
    const attempts = new Map<string, number>();
    await bus.subscribe<{ kind: string }>(
      'rp.work',
      (d) => {
        attempts.set(d.data.kind, d.attempt);
        if (d.data.kind === 'bad-request') throw new BadRequest('400 from the model API');
        if (d.data.kind === 'invalid') throw new ValidationError('no prompt');
        if (d.data.kind === 'flaky' && d.attempt < 3) throw new Error('503');
      },
      { group: 'g', maxAttempts: 5, backoff: { initialDelayMs: 1, maxDelayMs: 1 } },
    );
    for (const kind of ['bad-request', 'invalid', 'flaky']) await bus.publish('rp.work', { kind });
    await until(async () => (await transport.deadLetters.list({ group: 'g' })).length === 2, 5_000, 'two dead letters');
    await until(() => attempts.get('flaky') === 3, 5_000, 'the flaky one to succeed on attempt 3');
    const dead = await transport.deadLetters.list({ group: 'g' });
    expect(dead.map((x) => x.reason).sort()).toEqual(['unrecoverable', 'unrecoverable']);
    expect(dead.every((x) => x.attempts === 1)).toBe(true);
    expect(attempts.get('bad-request')).toBe(1);
    expect(attempts.get('invalid')).toBe(1);
    await bus.close();
  });

  it('spends a retry budget per window and dead-letters failures beyond it as retry-budget', async () => {
    const clock = new ManualClock();
    const transport = memoryTransport();
    const bus = createBus({ transport });
    const policy = retryPolicy({ budget: { retries: 3, perMs: 60_000 }, clock });
    bus.use(policy);
    await bus.subscribe(
      'rp.down',
      () => {
        throw new Error('downstream is down');
      },
      { group: 'g', maxAttempts: 100, backoff: { initialDelayMs: 1, maxDelayMs: 1 } },
    );
    await bus.publish('rp.down', {});
    await until(async () => (await transport.deadLetters.list({ group: 'g' })).length === 1, 5_000, 'the dead letter');
    const [dead] = await transport.deadLetters.list({ group: 'g' });
    expect(dead?.reason).toBe('retry-budget');
    expect(dead?.attempts).toBe(4); // three retries, then the budget was spent
    expect(policy.retriesLeft()).toBe(0);
    clock.advance(20_000); // a third of the window refills one retry
    expect(policy.retriesLeft()).toBe(1);
    await bus.close();
  });

  it('refuses bad options', () => {
    expect(() => retryPolicy({ budget: { retries: 0, perMs: 1 } })).toThrow(ConfigError);
    expect(() => retryPolicy({ unrecoverable: 'x' as never })).toThrow(ConfigError);
  });
});
