import {
  CircuitBreaker,
  CircuitOpenError,
  type CircuitState,
  ConfigError,
  errorFromWire,
  ManualClock,
  UnrecoverableError,
} from '@agentbus/core';
import { describe, expect, it } from 'vitest';

const fail = () => Promise.reject(new Error('503 from the model API'));
const ok = () => Promise.resolve('ok');

describe('CircuitBreaker', () => {
  it('opens after consecutive failures, refuses calls until the recovery time, then closes after good trials', async () => {
    const clock = new ManualClock();
    const changes: string[] = [];
    const b = new CircuitBreaker({
      consecutiveFailures: 3,
      recoveryTimeoutMs: 10_000,
      halfOpenTrials: 2,
      clock,
      onStateChange: (s: CircuitState, p: CircuitState) => changes.push(`${p}->${s}`),
    });
    for (let i = 0; i < 3; i++) await expect(b.run(fail)).rejects.toThrow('503');
    expect(b.state).toBe('open');
    let calls = 0;
    const err = await b.run(() => ++calls).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CircuitOpenError);
    expect((err as CircuitOpenError).retryable).toBe(true);
    expect((err as CircuitOpenError).data).toEqual({ retryAfterMs: 10_000 });
    expect(calls).toBe(0);
    clock.advance(10_000);
    expect(b.state).toBe('half-open');
    // Two trials at once may go through; a third waits for their outcome.
    const trials = [b.run(ok), b.run(ok)];
    await expect(b.run(ok)).rejects.toBeInstanceOf(CircuitOpenError);
    await Promise.all(trials);
    expect(b.state).toBe('closed');
    expect(changes).toEqual(['closed->open', 'open->half-open', 'half-open->closed']);
  });

  it('opens again when a half-open trial fails', async () => {
    const clock = new ManualClock();
    const b = new CircuitBreaker({ consecutiveFailures: 1, recoveryTimeoutMs: 1_000, clock });
    await expect(b.run(fail)).rejects.toThrow();
    clock.advance(1_000);
    await expect(b.run(fail)).rejects.toThrow('503');
    expect(b.snapshot()).toMatchObject({ state: 'open', retryAt: clock.now() + 1_000 });
  });

  it('opens on the failure rate over its window once enough calls were made', async () => {
    const b = new CircuitBreaker({ consecutiveFailures: 100, failureRate: 0.5, window: 10, minimumCalls: 6 });
    for (const bad of [true, false, true, false, true]) await b.run(bad ? fail : ok).catch(() => {});
    expect(b.state).toBe('closed'); // 3 of 5, but fewer than minimumCalls
    await b.run(fail).catch(() => {});
    expect(b.state).toBe('open'); // 4 of 6
  });

  it('does not count an UnrecoverableError (the message is bad, not the dependency)', async () => {
    const b = new CircuitBreaker({ consecutiveFailures: 2 });
    for (let i = 0; i < 5; i++) await b.run(() => Promise.reject(new UnrecoverableError('bad input'))).catch(() => {});
    expect(b.state).toBe('closed');
  });

  it('crosses the wire as CIRCUIT_OPEN and refuses bad options', () => {
    const e = errorFromWire(new CircuitOpenError('open', { data: { retryAfterMs: 5 } }).toWire());
    expect(e).toBeInstanceOf(CircuitOpenError);
    expect(() => new CircuitBreaker({ failureRate: 2 })).toThrow(ConfigError);
    expect(() => new CircuitBreaker({ halfOpenTrials: 0 })).toThrow(ConfigError);
  });
});
