import { type Bus, type CircuitState, circuitBreaker, handlerTimeout } from '@agentbus/core';
import { until } from './wait.js';

/** What {@link handlerTimeoutScenario} saw. */
export interface HandlerTimeoutResult {
  /** The attempt that finished (2: the first was cut off). */
  readonly finishedAttempt: number;
  /** Why the first attempt's signal was aborted. */
  readonly abortReason: unknown;
}

/**
 * A handler that hangs on its first attempt until its signal aborts; with `handlerTimeout` the
 * signal aborts (TimeoutError) and the message comes back for a second attempt, which finishes.
 */
export async function handlerTimeoutScenario(bus: Bus, topic: string, group: string): Promise<HandlerTimeoutResult> {
  bus.use(handlerTimeout({ ms: 100 }));
  let abortReason: unknown;
  let finish!: (attempt: number) => void;
  const finished = new Promise<number>((r) => {
    finish = r;
  });
  const sub = await bus.subscribe(
    topic,
    async (d) => {
      if (d.attempt === 1) {
        // A model call that hangs until it is told to stop.
        await new Promise<void>((resolve) => d.signal.addEventListener('abort', () => resolve(), { once: true }));
        abortReason = d.signal.reason;
        return;
      }
      finish(d.attempt);
    },
    { group, backoff: { initialDelayMs: 1, maxDelayMs: 1 } },
  );
  await bus.publish(topic, {});
  const finishedAttempt = await finished;
  await sub.close();
  return { finishedAttempt, abortReason };
}

/** What {@link circuitBreakerScenario} saw. */
export interface CircuitBreakerResult {
  readonly handled: readonly number[];
  /** Handler runs after the circuit opened (the trial, then the rest). */
  readonly runsAfterOpen: number;
  readonly finalState: CircuitState;
}

/**
 * A dependency that is down: the breaker opens after two failures, the handler is not run while
 * it is open (deliveries are put back), the dependency comes back, a trial closes the circuit and
 * every message is handled.
 */
export async function circuitBreakerScenario(bus: Bus, topic: string, group: string): Promise<CircuitBreakerResult> {
  const mw = circuitBreaker({ consecutiveFailures: 2, recoveryTimeoutMs: 200 });
  bus.use(mw);
  let healthy = false;
  let runs = 0;
  const handled: number[] = [];
  const sub = await bus.subscribe<{ n: number }>(
    topic,
    (d) => {
      runs++;
      if (!healthy) throw new Error('downstream is down');
      handled.push(d.data.n);
    },
    { group, maxAttempts: 1_000, backoff: { initialDelayMs: 1, maxDelayMs: 1 } },
  );
  for (let n = 0; n < 5; n++) await bus.publish(topic, { n });
  await until(() => mw.breaker.state === 'open', 10_000, 'the circuit to open');
  const runsWhenOpened = runs;
  healthy = true; // the dependency comes back while the circuit is open
  await until(() => handled.length === 5, 20_000, 'every message handled after the circuit closed');
  await sub.close();
  return { handled: [...handled].sort(), runsAfterOpen: runs - runsWhenOpened, finalState: mw.breaker.state };
}
