import {
  type BackoffOptions,
  type Bus,
  backoffDelayMs,
  type Delivery,
  HandlerError,
  TimeoutError,
  UnrecoverableError,
} from '@agentbus/core';
import type { Output } from '../output.js';

/** One task the planner hands out, and how the simulated model call behaves on it. */
export interface DemoTask {
  readonly id: string;
  /** Last topic segment: the kind of work. */
  readonly kind: string;
  readonly title: string;
  /** How long the simulated model call takes. */
  readonly workMs: number;
  /** `flaky` fails once with a transient error; `poison` can never succeed. */
  readonly behaviour: 'ok' | 'flaky' | 'poison';
}

/** The planner's task list. */
export const DEMO_TASKS: readonly DemoTask[] = Object.freeze([
  { id: 't1', kind: 'summarise', title: 'summarise the Q3 board report', workMs: 300, behaviour: 'ok' },
  { id: 't2', kind: 'draft', title: 'draft a reply to customer #4411', workMs: 250, behaviour: 'ok' },
  { id: 't3', kind: 'translate', title: 'translate the release notes to German', workMs: 350, behaviour: 'flaky' },
  { id: 't4', kind: 'extract', title: 'extract action items from the standup', workMs: 200, behaviour: 'ok' },
  { id: 't5', kind: 'classify', title: 'classify 12 support tickets', workMs: 300, behaviour: 'ok' },
  { id: 't6', kind: 'parse', title: 'parse the vendor spreadsheet', workMs: 150, behaviour: 'poison' },
]);

/** Defaults of the demo scenario. */
export const DEMO_DEFAULTS = Object.freeze({
  /**
   * The workers' group is `workers-<runId>`. Groups are claimed as a whole, whatever pattern a
   * member subscribed with, so a shared `workers` group would hand this run a task left over by
   * an interrupted run, a replayed dead letter or a concurrent demo on the same database.
   */
  groupPrefix: 'workers',
  workers: Object.freeze(['worker-1', 'worker-2']),
  maxAttempts: 3,
  // No jitter, so the printed retry delay is exactly the one the bus applies.
  backoff: Object.freeze({ initialDelayMs: 400, factor: 2, maxDelayMs: 2_000, jitter: 'none' }) as BackoffOptions,
  /** The whole scenario must finish within this, or the demo fails instead of hanging. */
  timeoutMs: 20_000,
});

/** What `runDemo` runs on and narrates to. */
export interface DemoOptions {
  readonly bus: Bus;
  readonly out: Output;
  /** Namespaces topics (`demo.<runId>.task.<kind>`) so runs on one database never mix. */
  readonly runId: string;
  readonly signal?: AbortSignal;
  readonly timeoutMs?: number;
}

/** What happened in one demo run, for the closing summary. */
export interface DemoSummary {
  readonly runId: string;
  readonly group: string;
  readonly elapsedMs: number;
  /** Task ids completed, by worker. */
  readonly doneBy: Readonly<Record<string, string[]>>;
  readonly retries: readonly { taskId: string; failedAttempt: number; delayMs: number; worker: string }[];
  readonly deadLetters: readonly { id: string; taskId: string; reason: string; error?: string | undefined }[];
}

interface TaskData {
  readonly id: string;
  readonly title: string;
  readonly workMs: number;
  readonly behaviour: DemoTask['behaviour'];
}

/** A fresh, short, topic-safe run id: time-ordered so `dlq list` shows runs in order. */
export function newRunId(): string {
  // Six base-36 digits of the clock cycle every ~25 days: short to type, ordered within a session.
  const random = Math.floor(Math.random() * 36 ** 2)
    .toString(36)
    .padStart(2, '0');
  return `${Date.now().toString(36).slice(-6)}${random}`;
}

/** The consumer group the workers of run `runId` share. */
export function demoGroup(runId: string): string {
  return `${DEMO_DEFAULTS.groupPrefix}-${runId}`;
}

/** Rejects with this when the user interrupts the run. */
class Interrupted extends Error {
  constructor() {
    super('interrupted');
  }
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(new Interrupted());
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    if (signal?.aborted) onAbort();
    else signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * The planner/worker scenario: a planner publishes the tasks, two workers in one group share
 * them, a transient failure is retried with backoff and a poison task is dead-lettered.
 * Narrates to `out` and resolves with a summary once every task has settled.
 */
export async function runDemo(options: DemoOptions): Promise<DemoSummary> {
  const { bus, out, runId, signal } = options;
  const { style } = out;
  const group = demoGroup(runId);
  const prefix = `demo.${runId}`;
  const started = Date.now();
  const doneBy: Record<string, string[]> = Object.fromEntries(DEMO_DEFAULTS.workers.map((w) => [w, []]));
  const retries: { taskId: string; failedAttempt: number; delayMs: number; worker: string }[] = [];
  const failedAt = new Map<string, number>();
  const colours: Record<string, (s: string) => string> = {
    planner: style.magenta,
    'worker-1': style.cyan,
    'worker-2': style.green,
  };
  const say = (actor: string, text: string) => {
    const clock = style.dim(`+${((Date.now() - started) / 1000).toFixed(2)}s`);
    out.line(`${clock}  ${(colours[actor] ?? style.bold)(actor.padEnd(8))}  ${text}`);
  };

  const expectedDone = DEMO_TASKS.filter((t) => t.behaviour !== 'poison').length;
  const expectedPoison = DEMO_TASKS.length - expectedDone;
  let settled = 0;
  let allSettled!: () => void;
  const everyTaskSettled = new Promise<void>((resolve) => (allSettled = resolve));
  const settle = () => {
    if (++settled === expectedDone + expectedPoison) allSettled();
  };

  const work = (worker: string) => async (d: Delivery<TaskData>) => {
    const task = d.data;
    const failed = failedAt.get(task.id);
    const again = failed === undefined ? '' : `, ${Date.now() - failed} ms after the failure`;
    say(worker, `took ${style.bold(task.id)} "${task.title}" ${style.dim(`(attempt ${d.attempt}${again})`)}`);
    const t0 = Date.now();
    await sleep(task.workMs, signal);
    if (task.behaviour === 'flaky' && d.attempt === 1) {
      const delayMs = backoffDelayMs(d.attempt, DEMO_DEFAULTS.backoff);
      retries.push({ taskId: task.id, failedAttempt: d.attempt, delayMs, worker });
      failedAt.set(task.id, Date.now());
      say(
        worker,
        style.yellow(`${task.id} failed on attempt ${d.attempt}: model API overloaded (transient)`) +
          ` -> the bus retries in ${delayMs} ms`,
      );
      throw new HandlerError('model API overloaded (HTTP 529), try again later');
    }
    if (task.behaviour === 'poison') {
      say(worker, `${style.red(`${task.id} cannot ever succeed: the spreadsheet is corrupt`)} -> dead-letter store`);
      settle();
      throw new UnrecoverableError('spreadsheet is corrupt: row 1 has 3 cells, the header has 5');
    }
    doneBy[worker]?.push(task.id);
    say(worker, `${style.green('done')} ${task.id} in ${Date.now() - t0} ms`);
    settle();
  };

  const subs = [];
  for (const worker of DEMO_DEFAULTS.workers) {
    // One task at a time per worker, so the two visibly share the queue.
    subs.push(
      await bus.subscribe<TaskData>(`${prefix}.task.*`, work(worker), {
        group,
        concurrency: 1,
        maxAttempts: DEMO_DEFAULTS.maxAttempts,
        backoff: DEMO_DEFAULTS.backoff,
      }),
    );
  }
  try {
    // Narrated first: once published, workers may start before this line would print.
    for (const t of DEMO_TASKS) say('planner', `publishes ${style.bold(t.id)} "${t.title}"`);
    await bus.publishBatch(
      DEMO_TASKS.map((t) => ({
        topic: `${prefix}.task.${t.kind}`,
        data: { id: t.id, title: t.title, workMs: t.workMs, behaviour: t.behaviour } satisfies TaskData,
        options: { source: 'planner', type: 'task.assigned', workflowid: runId },
      })),
    );

    const deadline = started + (options.timeoutMs ?? DEMO_DEFAULTS.timeoutMs);
    await withDeadline(everyTaskSettled, deadline, signal, 'the demo tasks did not all settle in time');
    // The bus dead-letters after the handler threw; wait until the store shows it.
    let records = await bus.transport.deadLetters.list({ topic: `${prefix}.>` });
    while (records.length < expectedPoison) {
      await withDeadline(sleep(20, signal), deadline, signal, 'the poison task never reached the dead-letter store');
      records = await bus.transport.deadLetters.list({ topic: `${prefix}.>` });
    }
    return {
      runId,
      group,
      elapsedMs: Date.now() - started,
      doneBy,
      retries,
      deadLetters: records.map((r) => ({
        id: r.id,
        taskId: DEMO_TASKS.find((t) => r.message.topic.endsWith(`.${t.kind}`))?.id ?? r.message.topic,
        reason: r.reason,
        error: r.error,
      })),
    };
  } finally {
    await Promise.all(subs.map((s) => s.close()));
  }
}

async function withDeadline<T>(
  work: Promise<T>,
  deadlineMs: number,
  signal: AbortSignal | undefined,
  message: string,
): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  let onAbort: (() => void) | undefined;
  const stop = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new TimeoutError(message)), Math.max(0, deadlineMs - Date.now()));
    onAbort = () => reject(new Interrupted());
    if (signal?.aborted) onAbort();
    else signal?.addEventListener('abort', onAbort, { once: true });
  });
  try {
    return await Promise.race([work, stop]);
  } finally {
    clearTimeout(timer);
    if (onAbort) signal?.removeEventListener('abort', onAbort);
  }
}
