import {
  createBus,
  type IdempotencyStore,
  memoryIdempotencyStore,
  RateLimitedError,
  TimeoutError,
  type Transport,
} from '@agentbus/core';
import { describe, expect, it } from 'vitest';
import { dedupScenario } from './dedup-scenario.js';
import { circuitBreakerScenario, handlerTimeoutScenario } from './middleware-scenarios.js';
import { rateLimitScenario } from './rate-limit-scenario.js';

export interface MiddlewareConformanceOptions {
  /** Shown in the describe block. */
  readonly name: string;
  /** A new transport of the backend under test (each test opens its own bus over one). */
  readonly open: () => Transport;
  /** The dedup store to use (default an in-memory one). */
  readonly store?: () => IdempotencyStore;
  /** If set, the block is skipped with this reason. */
  readonly skipReason?: string | undefined;
}

/** Registers the middleware scenarios (dedup, handler timeout, circuit breaker, rate limit) for one transport. */
export function middlewareConformance(o: MiddlewareConformanceOptions): void {
  describe.skipIf(o.skipReason)(`middleware on ${o.name}`, () => {
    it('dedup: every message delivered three times, side effect once per group', async () => {
      const bus = createBus({ transport: o.open() });
      const r = await dedupScenario({
        bus,
        store: o.store?.() ?? memoryIdempotencyStore(),
        topic: 'mw.dedup',
        groups: ['billing', 'audit'],
      });
      expect(r.effects.size).toBe(100);
      expect([...r.effects.values()].every((n) => n === 1)).toBe(true);
      expect(r.suppressed).toBe(200);
      await bus.close();
    });

    it('handler timeout aborts the signal and the message is retried', async () => {
      const bus = createBus({ transport: o.open() });
      const r = await handlerTimeoutScenario(bus, 'mw.timeout', 'timeout-workers');
      expect(r.finishedAttempt).toBe(2);
      expect(r.abortReason).toBeInstanceOf(TimeoutError);
      await bus.close();
    });

    it('circuit breaker runs no handler while open and handles everything after', async () => {
      const bus = createBus({ transport: o.open() });
      const r = await circuitBreakerScenario(bus, 'mw.breaker', 'breaker-workers');
      expect(r.handled).toEqual([0, 1, 2, 3, 4]);
      expect(r.runsAfterOpen).toBe(5); // the trial, then the four others
      expect(r.finalState).toBe('closed');
      await bus.close();
    });

    it('rate limit refuses a publish over the budget and puts deliveries over it back until tokens refill', async () => {
      const bus = createBus({ transport: o.open() });
      const r = await rateLimitScenario(bus, 'mw.ratelimit', 'ratelimit-workers');
      expect(r.refused).toBeInstanceOf(RateLimitedError);
      expect((r.refused as RateLimitedError).retryAfterMs).toBe(1_000);
      expect(r.handledWhileFrozen).toHaveLength(2);
      expect(r.handled).toEqual(['agent-a:1', 'agent-a:2', 'agent-a:3', 'agent-a:4', 'agent-b:1']);
      expect(r.handlerRuns).toBe(5); // no put-back delivery ran the handler
      expect(r.putBack).toBeGreaterThanOrEqual(2);
      await bus.close();
    });
  });
}
