import { type Bus, type DeadLetter, retryPolicy } from '@agentbus/core';
import { until } from './wait.js';

/** {@link until}, describing the state when the wait gives up (a template string would show it as it was at the start). */
async function waitFor(condition: () => boolean | Promise<boolean>, timeoutMs: number, what: () => string) {
  try {
    await until(condition, timeoutMs);
  } catch (err) {
    throw new Error(`timed out after ${timeoutMs} ms waiting for ${what()}`, { cause: err });
  }
}

/** One run of the handler in {@link retryScenario}. */
export interface RetryAttempt {
  readonly attempt: number;
  /** `delivery.lastError` as the handler saw it. */
  readonly lastError: string | undefined;
  /** When the handler started (performance.now()). */
  readonly atMs: number;
}

/** What {@link retryScenario} saw. */
export interface RetryScenarioResult {
  /** Runs of the message that fails twice, then succeeds. */
  readonly flaky: readonly RetryAttempt[];
  /** Runs of the message that fails with an error classed unrecoverable (1). */
  readonly unrecoverableRuns: number;
  /** Runs of the message that always fails (`maxAttempts`). */
  readonly failingRuns: number;
  /** The group's dead letters by the message's kind (`unrecoverable`, `failing`). */
  readonly deadLetters: ReadonlyMap<string, DeadLetter>;
  /** The settings used, for the caller's checks. */
  readonly maxAttempts: number;
  /** The backoff before attempts 2 and 3 (jitter off, so exactly these). */
  readonly backoffMs: readonly [number, number];
}

/** A bad request to a model API: retrying it cannot help. */
export class RetryScenarioBadRequest extends Error {
  override readonly name = 'BadRequest';
}

const INITIAL_DELAY_MS = 10;
const FACTOR = 4;

/**
 * Retries on the real transport, with `retryPolicy` classing BadRequest as unrecoverable. A
 * message whose handler fails twice with a retryable error is handled on attempt 3, after an
 * exponential backoff (10 ms, then 40 ms, jitter off; RabbitMQ rounds both up to the first step
 * of its retry ladder, 100 ms by default), and each retry sees the previous attempt's error as
 * `delivery.lastError`; a BadRequest is dead-lettered at once (attempt 1, reason
 * `unrecoverable`); a message that always fails is dead-lettered `max-attempts` after
 * `maxAttempts` runs.
 */
export async function retryScenario(bus: Bus, topic: string, group: string): Promise<RetryScenarioResult> {
  const maxAttempts = 4;
  bus.use(retryPolicy({ unrecoverable: [RetryScenarioBadRequest] }));
  const flaky: RetryAttempt[] = [];
  let unrecoverableRuns = 0;
  let failingRuns = 0;
  let flakyDone = false;
  const sub = await bus.subscribe<{ kind: string }>(
    topic,
    (d) => {
      const atMs = performance.now();
      switch (d.data.kind) {
        case 'flaky':
          flaky.push({ attempt: d.attempt, lastError: d.lastError, atMs });
          if (d.attempt < 3) throw new Error(`503 from the model API on attempt ${d.attempt}`);
          flakyDone = true;
          return;
        case 'unrecoverable':
          unrecoverableRuns++;
          throw new RetryScenarioBadRequest('400: the prompt names no tool');
        default:
          failingRuns++;
          throw new Error(`the tool is down (attempt ${d.attempt})`);
      }
    },
    {
      group,
      concurrency: 4,
      maxAttempts,
      backoff: { initialDelayMs: INITIAL_DELAY_MS, factor: FACTOR, maxDelayMs: 1_000, jitter: 'none' },
    },
  );
  for (const kind of ['flaky', 'unrecoverable', 'failing']) await bus.publish(topic, { kind });
  const deadLetters = new Map<string, DeadLetter>();
  await waitFor(
    async () => {
      deadLetters.clear();
      for (const dl of await bus.transport.deadLetters.list({ group })) {
        deadLetters.set((bus.codec.decode(dl.message.body).data as { kind: string }).kind, dl);
      }
      return flakyDone && deadLetters.size >= 2;
    },
    20_000,
    () =>
      `the flaky message handled and two dead letters (flaky runs ${flaky.length}, dead letters ${[...deadLetters.keys()].join(', ') || 'none'})`,
  );
  await sub.close();
  return {
    flaky,
    unrecoverableRuns,
    failingRuns,
    deadLetters,
    maxAttempts,
    backoffMs: [INITIAL_DELAY_MS, INITIAL_DELAY_MS * FACTOR],
  };
}
