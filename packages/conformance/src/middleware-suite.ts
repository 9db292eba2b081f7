import {
  createBus,
  type IdempotencyStore,
  memoryIdempotencyStore,
  memorySequenceStore,
  RateLimitedError,
  type SequenceStore,
  TimeoutError,
  type Transport,
} from '@agentbus/core';
import { describe, expect, it } from 'vitest';
import { dedupScenario } from './dedup-scenario.js';
import { circuitBreakerScenario, handlerTimeoutScenario } from './middleware-scenarios.js';
import { rateLimitScenario } from './rate-limit-scenario.js';
import { retryScenario } from './retry-scenario.js';
import { orderedDeadLetterScenario, sequencingScenario } from './sequencing-scenario.js';

export interface MiddlewareConformanceOptions {
  /** Shown in the describe block. */
  readonly name: string;
  /** A new transport of the backend under test (each test opens its own bus over one). */
  readonly open: () => Transport;
  /** The dedup store to use (default an in-memory one). */
  readonly store?: () => IdempotencyStore;
  /** The sequence store of the sequencing scenarios (default an in-memory one); a new one per test. */
  readonly sequenceStore?: () => SequenceStore;
  /** If set, the block is skipped with this reason. */
  readonly skipReason?: string | undefined;
}

/**
 * Registers the middleware scenarios (dedup, handler timeout, circuit breaker, rate limit, retry,
 * sequencing, order-preserving dead letters) for one transport.
 */
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

    it('retry: retries with exponential backoff and lastError, dead-letters unrecoverable errors at once and the rest after maxAttempts', async () => {
      const bus = createBus({ transport: o.open() });
      const r = await retryScenario(bus, 'mw.retry', 'retry-workers');
      expect(r.flaky.map((a) => a.attempt)).toEqual([1, 2, 3]);
      expect(r.flaky[0]?.lastError).toBeUndefined();
      expect(r.flaky[1]?.lastError).toContain('503 from the model API on attempt 1');
      expect(r.flaky[2]?.lastError).toContain('503 from the model API on attempt 2');
      const [t1, t2, t3] = r.flaky.map((a) => a.atMs) as [number, number, number];
      // Never redelivered before the backoff (1 ms of slack for timer rounding): 10 ms, then 40 ms.
      expect(t2 - t1).toBeGreaterThanOrEqual(r.backoffMs[0] - 1);
      expect(t3 - t2).toBeGreaterThanOrEqual(r.backoffMs[1] - 1);
      expect([...r.deadLetters.keys()].sort()).toEqual(['failing', 'unrecoverable']);
      expect(r.deadLetters.get('unrecoverable')).toMatchObject({ reason: 'unrecoverable', attempts: 1 });
      expect(r.deadLetters.get('unrecoverable')?.error).toContain('400: the prompt names no tool');
      expect(r.unrecoverableRuns).toBe(1);
      expect(r.deadLetters.get('failing')).toMatchObject({ reason: 'max-attempts', attempts: r.maxAttempts });
      expect(r.deadLetters.get('failing')?.error).toContain(`the tool is down (attempt ${r.maxAttempts})`);
      expect(r.failingRuns).toBe(r.maxAttempts);
      await bus.close();
    });

    it('sequencing: each workflow handled in order and once, a retried failure holds its own workflow only', async () => {
      const bus = createBus({ transport: o.open() });
      const r = await sequencingScenario({
        bus,
        store: o.sequenceStore?.() ?? memorySequenceStore(),
        topic: 'mw.sequencing',
        group: 'sequencing-workers',
      });
      expect(Object.fromEntries(r.handled)).toEqual({ a: [1, 2, 3, 4, 5], b: [1, 2, 3, 4], c: [1, 2, 3] });
      expect(r.handlerRuns).toBe(12);
      expect(r.duplicates).toBe(1);
      expect(r.acked).toBe(13);
      expect(r.failures).toBeGreaterThanOrEqual(1);
      // b and c were handled in full while a2 was still failing.
      expect(Object.fromEntries(r.othersWhenA2Succeeded)).toEqual({ b: [1, 2, 3, 4], c: [1, 2, 3] });
      await bus.close();
    });

    it('sequencing: a dead letter blocks its workflow only, and replayWorkflow brings the workflow back in order', async () => {
      const bus = createBus({ transport: o.open() });
      const r = await orderedDeadLetterScenario({
        bus,
        store: o.sequenceStore?.() ?? memorySequenceStore(),
        topic: 'mw.ordered-dlq',
        group: 'ordered-dlq-workers',
      });
      expect(r.handledBeforeReplay.filter((s) => s.startsWith('w'))).toEqual(['w1']);
      expect(r.x).toEqual([1, 2]);
      expect(Object.fromEntries([...r.deadBeforeReplay].map(([seq, dl]) => [seq, dl.reason]))).toEqual({
        2: 'unrecoverable',
        3: 'workflow-blocked',
        4: 'workflow-blocked',
      });
      expect(r.blockedBeforeReplay).toEqual([{ workflowId: 'w', sequence: 2 }]);
      expect(r.replayed).toBe(3);
      expect(r.w).toEqual([1, 2, 3, 4]);
      expect(r.blockedAfter).toBe(0);
      expect(r.deadAfter).toBe(0);
      await bus.close();
    });
  });
}
