import {
  defineSaga,
  SAGA_UNFINISHED_STATUSES,
  type SagaDefinition,
  type SagaRepository,
  type SagaState,
  type Transport,
  UnrecoverableError,
} from '@agentbus/core';
import { startChild } from './child-process.js';
import { until } from './wait.js';

/** A side effect of the crash test's sagas, as recorded. */
export interface SagaCrashEffect {
  readonly sagaId: string;
  readonly step: string;
  readonly kind: 'action' | 'compensation';
  /** How often it was recorded: more than once when a crash made it run again. */
  readonly runs: number;
}

/** Where the crash test's steps record their side effects, durably and idempotently (keyed by saga, step and kind). */
export interface SagaCrashEffects {
  record(sagaId: string, step: string, kind: 'action' | 'compensation'): Promise<void>;
  all(): Promise<SagaCrashEffect[]>;
  close(): unknown;
}

/** What a saga crash fixture module exports; the child loads it by path. */
export interface SagaCrashFixture {
  createTransport(arg: string): Transport | Promise<Transport>;
  createRepository(arg: string): SagaRepository & { close?(): unknown };
  createEffects(arg: string): SagaCrashEffects;
}

export interface SagaCrashOptions {
  /** Path of a module exporting {@link SagaCrashFixture}'s functions. */
  readonly fixtureModule: string;
  readonly fixtureArg: string;
  /** The same fixture, loaded in this process. */
  readonly fixture: SagaCrashFixture;
  readonly sagas?: number;
  readonly kills?: number;
  readonly random?: () => number;
  readonly log?: (line: string) => void;
}

export interface SagaCrashResult {
  readonly sagas: number;
  readonly completed: number;
  readonly compensated: number;
  readonly failed: number;
  readonly unfinished: number;
  /** Sagas whose effects do not match their end (must be empty): an action without its compensation, a missing action … */
  readonly halfDone: readonly string[];
  /** Sagas that ended otherwise than designed (must be empty). */
  readonly wrongOutcome: readonly string[];
  readonly kills: number;
  /** Effects the child had recorded when it was killed, per kill. */
  readonly killPoints: readonly number[];
  /** Steps (actions or compensations) cut short by a kill and run again. */
  readonly interruptedSteps: number;
  /** Effects recorded more than once (a step re-run after a kill; recorded once). */
  readonly rerunEffects: number;
  readonly seconds: number;
}

export const CRASH_SAGA_STEPS = ['reserve', 'charge', 'ship', 'notify'] as const;

/** The crash test's saga payload: which step (1-based) fails for good, if any. */
export interface CrashPayload {
  readonly index: number;
  readonly failAt: number | null;
}

/** Saga `i` of the crash test: every third one fails at a step (1–4), so it compensates. */
export function crashPayload(i: number): CrashPayload {
  return { index: i, failAt: i % 3 === 0 ? (i % 4) + 1 : null };
}

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * The crash test's saga: four steps whose actions and compensations record their side effect
 * (with short random pauses before and after, so a kill can land anywhere); `charge` fails once
 * with a retryable error on its first attempt for every fifth saga; the `failAt` step fails for good.
 */
export function crashSaga(effects: SagaCrashEffects): SagaDefinition<CrashPayload> {
  return defineSaga<CrashPayload>({
    name: 'crash',
    steps: CRASH_SAGA_STEPS.map((name, k) => ({
      name,
      retry: { maxAttempts: 3, backoff: { initialDelayMs: 5, maxDelayMs: 10 } },
      action: async (ctx) => {
        await pause(Math.random() * 10);
        if (ctx.payload.failAt === k + 1) throw new UnrecoverableError(`${name} refused`);
        if (name === 'charge' && ctx.payload.index % 5 === 1 && ctx.attempt === 1)
          throw new Error('payment API hiccup');
        await effects.record(ctx.sagaId, name, 'action');
        await pause(Math.random() * 10);
        return { done: name };
      },
      compensate: async (ctx) => {
        await pause(Math.random() * 10);
        await effects.record(ctx.sagaId, name, 'compensation');
        await pause(Math.random() * 10);
      },
    })),
  });
}

/** Checks one saga's end against its effects; returns what is wrong, or undefined. */
function check(s: SagaState, effects: SagaCrashEffect[]): string | undefined {
  const has = (step: string, kind: 'action' | 'compensation') =>
    effects.some((e) => e.step === step && e.kind === kind);
  const wrong: string[] = [];
  if (s.status === 'completed') {
    for (const step of CRASH_SAGA_STEPS) {
      if (!has(step, 'action')) wrong.push(`${step} action missing`);
      if (has(step, 'compensation')) wrong.push(`${step} compensated`);
    }
  } else if (s.status === 'compensated') {
    for (const step of CRASH_SAGA_STEPS) {
      if (has(step, 'action') && !has(step, 'compensation')) wrong.push(`${step} done but not compensated`);
      if (!has(step, 'action') && has(step, 'compensation')) wrong.push(`${step} compensated without its action`);
    }
  } else wrong.push(`ended ${s.status}`);
  return wrong.length ? `${s.id}: ${wrong.join(', ')}` : undefined;
}

/**
 * Issue 7's saga crash test: `sagas` sagas of four steps run in a child process that is SIGKILLed
 * `kills` times at random points and restarted (it resumes every unfinished saga, then starts any
 * saga not started yet: start is idempotent on the id); a last child finishes. Even restarts keep
 * the owner id (immediate takeover), odd ones take a new one (takeover after the lease). Every
 * saga must end completed with all its effects, or compensated with every done step undone.
 */
export async function sagaCrashRun(o: SagaCrashOptions): Promise<SagaCrashResult> {
  const started = Date.now();
  const count = o.sagas ?? 50;
  const kills = o.kills ?? 8;
  const random = o.random ?? Math.random;
  const log = o.log ?? (() => {});
  const repository = o.fixture.createRepository(o.fixtureArg);
  const effects = o.fixture.createEffects(o.fixtureArg);
  try {
    const expectedEffects = Array.from({ length: count }, (_, i) => {
      const failAt = crashPayload(i).failAt;
      return failAt === null ? CRASH_SAGA_STEPS.length : 2 * (failAt - 1);
    }).reduce((a, b) => a + b, 0);
    const share = Math.max(1, Math.floor(expectedEffects / (kills + 2)));
    const finished = async () =>
      (await repository.list({ status: SAGA_UNFINISHED_STATUSES })).length === 0 &&
      (await repository.list({ name: 'crash' })).length === count;
    const killPoints: number[] = [];
    for (let k = 0; k <= kills; k++) {
      const final = k === kills;
      const owner = k % 2 === 0 ? 'crash-orchestrator' : `crash-orchestrator-${k}`;
      const child = startChild('saga-child', [o.fixtureModule, o.fixtureArg, String(count), owner]);
      const recorded = () => child.lines.filter((l) => (l as { effect?: boolean }).effect).length;
      const target = 1 + Math.floor(random() * 2 * share);
      try {
        if (final) await until(finished, 60_000, 'every saga to end');
        else await until(async () => recorded() >= target || (await finished()), 30_000, `${target} effects`);
      } catch (err) {
        const open = await repository.list({ status: SAGA_UNFINISHED_STATUSES });
        throw new Error(
          `${(err as Error).message}: ${open.length} unfinished (${open
            .slice(0, 5)
            .map((s) => `${s.id} ${s.status} ${s.steps.map((st) => st.status).join('/')} owner ${s.owner}`)
            .join('; ')}), stderr: ${child.stderr().slice(-2_000) || '(empty)'}`,
        );
      } finally {
        await child.kill();
      }
      if (!final) killPoints.push(recorded());
      log(`${final ? 'final child' : `kill ${k + 1}`} (${owner}): recorded ${recorded()} effects`);
    }
    const states = await repository.list({ name: 'crash' });
    const all = await effects.all();
    const halfDone: string[] = [];
    const wrongOutcome: string[] = [];
    for (const s of states) {
      const problem = check(
        s,
        all.filter((e) => e.sagaId === s.id),
      );
      if (problem) halfDone.push(problem);
      const expected = (s.payload as CrashPayload).failAt === null ? 'completed' : 'compensated';
      if (s.status !== expected) wrongOutcome.push(`${s.id}: ${s.status}, expected ${expected}`);
    }
    const by = (status: string) => states.filter((s) => s.status === status).length;
    return {
      sagas: states.length,
      completed: by('completed'),
      compensated: by('compensated'),
      failed: by('failed'),
      unfinished: states.filter((s) => SAGA_UNFINISHED_STATUSES.includes(s.status)).length,
      halfDone,
      wrongOutcome,
      kills,
      killPoints,
      interruptedSteps: states.reduce(
        (n, s) =>
          n +
          s.steps.filter(
            (st) =>
              st.interruptions > 0 ||
              st.attempts - st.failures > 1 ||
              st.compensationAttempts - st.compensationFailures > 1,
          ).length,
        0,
      ),
      rerunEffects: all.filter((e) => e.runs > 1).length,
      seconds: Math.round((Date.now() - started) / 100) / 10,
    };
  } finally {
    await repository.close?.();
    await effects.close();
  }
}
