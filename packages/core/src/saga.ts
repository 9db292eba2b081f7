import { type BackoffOptions, validateBackoff } from './backoff.js';
import { ConfigError, type WireError } from './errors.js';
import { positiveInteger, positiveNumber } from './validate.js';

/**
 * Asks another agent over the bus and resolves with the data of its reply (rejects with the
 * reply's error, a TimeoutError after `timeoutMs`, or the signal's reason once it aborts).
 * The saga orchestrator uses `bus.request` unless given another (`requester` option).
 */
export type SagaRequester = (topic: string, data: unknown, options: SagaRequestOptions) => Promise<unknown>;

export interface SagaRequestOptions {
  readonly timeoutMs: number;
  readonly signal: AbortSignal;
  /** The saga id: requests of one saga share it as their `workflowid`. */
  readonly workflowid: string;
}

/** What an action (and a compensation) is given. */
export interface SagaStepContext<P extends object = object> {
  readonly sagaId: string;
  readonly sagaName: string;
  readonly step: string;
  /** 1 on the first run of this action (or of this compensation), 2 on its first retry … */
  readonly attempt: number;
  /**
   * Whether an earlier run of this action (or compensation) was cut short by a crash or a takeover
   * and may or may not have taken effect: this run must be idempotent (it always must be).
   */
  readonly resumed: boolean;
  /**
   * The payload shared by the steps: a copy of the saga's persisted payload. Changes are saved
   * with the step's outcome when the step succeeds and dropped when it fails.
   */
  readonly payload: P;
  /** Results of the actions that succeeded so far, by step name. */
  readonly results: Readonly<Record<string, unknown>>;
  /** Aborted when the step's timeout passes (reason: TimeoutError) or another orchestrator took the saga over. */
  readonly signal: AbortSignal;
  /** Asks another agent over the bus (see {@link SagaRequester}); the step's signal and timeout bound it. */
  request<T = unknown>(topic: string, data: unknown, options?: { readonly timeoutMs?: number }): Promise<T>;
}

/** What a compensation is given on top of the step context. */
export interface SagaCompensationContext<P extends object = object, R = unknown> extends SagaStepContext<P> {
  /** The result of the step's action; undefined when {@link uncertain}. */
  readonly result: R | undefined;
  /**
   * Whether the action may or may not have taken effect: it timed out (its work may still have
   * happened), or it kept being interrupted by crashes. The compensation must then find out (or
   * be a no-op where there is nothing to undo); `result` is undefined.
   */
  readonly uncertain: boolean;
  /** The failure that made the saga compensate. */
  readonly error: WireError | undefined;
}

/** A step that is a request to another agent: `data` builds the request from the context. */
export interface SagaRequestStep<C> {
  readonly topic: string;
  readonly data?: Bivariant<C, unknown>;
  /** Bounds the request (default: the step's timeout, else the orchestrator's `requestTimeoutMs`). */
  readonly timeoutMs?: number;
}

/** Retries of an action or a compensation: only errors that are retryable (`isRetryable`) are retried. */
export interface SagaRetryOptions {
  /** Runs at most (default: 1 for actions, 5 for compensations; see {@link SAGA_STEP_DEFAULTS}). */
  readonly maxAttempts?: number;
  readonly backoff?: Partial<BackoffOptions>;
}

/** Retry settings resolved against the defaults. */
export interface SagaRetry {
  readonly maxAttempts: number;
  readonly backoff: BackoffOptions;
}

/**
 * Step defaults: an action that fails is not retried (the saga compensates at once; give it
 * `retry` for flaky calls), a compensation is tried 5 times before the saga is left `failed`.
 */
export const SAGA_STEP_DEFAULTS = Object.freeze({
  retry: Object.freeze({ maxAttempts: 1 }),
  compensationRetry: Object.freeze({ maxAttempts: 5 }),
  backoff: Object.freeze<BackoffOptions>({ initialDelayMs: 100, factor: 2, maxDelayMs: 5_000, jitter: 'equal' }),
});

// Method syntax is checked bivariantly, so a step can declare the payload and result types it
// expects (`(ctx: SagaCompensationContext<Order, Charge>) => …`) inside a list of steps.
type Bivariant<A, R> = { fn(ctx: A): R }['fn'];

export type SagaAction<P extends object, R = unknown> = Bivariant<SagaStepContext<P>, R | Promise<R>>;
export type SagaCompensation<P extends object, R = unknown> = Bivariant<SagaCompensationContext<P, R>, unknown>;

export interface SagaStepDefinition<P extends object = object, R = unknown> {
  /** Unique within the saga; results are keyed by it. */
  readonly name: string;
  /** A local function, or a request to another agent. Must be idempotent: a crash re-runs it. */
  readonly action: SagaAction<P, R> | SagaRequestStep<SagaStepContext<P>>;
  /**
   * Undoes the action when a later step fails (with the action's result), or when this step timed
   * out (`uncertain`). Must be idempotent and tolerate an action that never took effect. Absent:
   * nothing to undo.
   */
  readonly compensate?: SagaCompensation<P, R> | SagaRequestStep<SagaCompensationContext<P, R>>;
  /** Aborts a run of the action after this long and fails it with TimeoutError. Default: none (requests still time out). */
  readonly timeoutMs?: number;
  /** The same for a run of the compensation (default: `timeoutMs`). */
  readonly compensateTimeoutMs?: number;
  readonly retry?: SagaRetryOptions;
  readonly compensationRetry?: SagaRetryOptions;
}

export interface SagaDefinitionOptions<P extends object = object> {
  /** One topic segment (`[A-Za-z0-9_-:@$]`), used in event topics. */
  readonly name: string;
  readonly steps: readonly SagaStepDefinition<P>[];
}

/** A validated step, as the orchestrator runs it. */
export interface SagaStep<P extends object = object> {
  readonly name: string;
  readonly hasCompensation: boolean;
  readonly timeoutMs: number | undefined;
  readonly compensateTimeoutMs: number | undefined;
  readonly retry: SagaRetry;
  readonly compensationRetry: SagaRetry;
  /** Runs the action. */
  run(ctx: SagaStepContext<P>): Promise<unknown>;
  /** Runs the compensation (resolves at once when there is none). */
  undo(ctx: SagaCompensationContext<P>): Promise<unknown>;
}

export interface SagaDefinition<P extends object = object> {
  readonly name: string;
  readonly steps: readonly SagaStep<P>[];
}

const SEGMENT = /^[A-Za-z0-9_\-:@$]+$/;

function optionalPositive(value: number | undefined, path: string): number | undefined {
  return value === undefined ? undefined : positiveNumber(value, path);
}

function resolveRetry(r: SagaRetryOptions | undefined, defaults: { maxAttempts: number }, path: string): SagaRetry {
  if (r !== undefined && (typeof r !== 'object' || r === null)) throw new ConfigError('must be an object', { path });
  const backoff = { ...SAGA_STEP_DEFAULTS.backoff, ...r?.backoff };
  validateBackoff(backoff, `${path}.backoff`);
  return Object.freeze({
    maxAttempts: positiveInteger(r?.maxAttempts ?? defaults.maxAttempts, `${path}.maxAttempts`),
    backoff: Object.freeze(backoff),
  });
}

function isRequestStep(x: unknown): x is SagaRequestStep<unknown> {
  return typeof x === 'object' && x !== null && typeof (x as { topic?: unknown }).topic === 'string';
}

function toRunner<C extends SagaStepContext<object>>(
  spec: Bivariant<C, unknown> | SagaRequestStep<C>,
  path: string,
  stepTimeoutMs: number | undefined,
): (ctx: C) => Promise<unknown> {
  if (typeof spec === 'function') return async (ctx) => spec(ctx);
  if (!isRequestStep(spec)) throw new ConfigError('must be a function or { topic, data? }', { path });
  if (spec.data !== undefined && typeof spec.data !== 'function') {
    throw new ConfigError('must be a function of the step context', { path: `${path}.data` });
  }
  const timeoutMs = optionalPositive(spec.timeoutMs, `${path}.timeoutMs`) ?? stepTimeoutMs;
  return async (ctx) =>
    ctx.request(spec.topic, spec.data ? spec.data(ctx) : ctx.payload, timeoutMs === undefined ? {} : { timeoutMs });
}

/**
 * Defines a saga: steps run in order, each an action (a local function or a request to another
 * agent) with an optional compensation. When a step fails for good, the compensations of the steps
 * that succeeded run in reverse order, each with its action's result. Run it with a
 * `SagaOrchestrator`. Throws ConfigError naming the offending field.
 */
export function defineSaga<P extends object = Record<string, unknown>>(
  options: SagaDefinitionOptions<P>,
): SagaDefinition<P> {
  if (typeof options?.name !== 'string' || !SEGMENT.test(options.name)) {
    throw new ConfigError('must be one topic segment ([A-Za-z0-9_-:@$], no dots)', { path: 'name' });
  }
  if (!Array.isArray(options.steps) || options.steps.length === 0) {
    throw new ConfigError('must be a non-empty list', { path: 'steps' });
  }
  const names = new Set<string>();
  const steps = options.steps.map((s, i): SagaStep<P> => {
    const path = `steps[${i}]`;
    if (typeof s?.name !== 'string' || s.name === '') {
      throw new ConfigError('must be a non-empty string', { path: `${path}.name` });
    }
    if (names.has(s.name)) throw new ConfigError(`duplicate step name ${s.name}`, { path: `${path}.name` });
    names.add(s.name);
    const timeoutMs = optionalPositive(s.timeoutMs, `${path}.timeoutMs`);
    const compensateTimeoutMs = optionalPositive(s.compensateTimeoutMs, `${path}.compensateTimeoutMs`) ?? timeoutMs;
    const run = toRunner<SagaStepContext<P>>(s.action, `${path}.action`, timeoutMs);
    const undo =
      s.compensate === undefined
        ? async () => undefined
        : toRunner<SagaCompensationContext<P>>(
            s.compensate as SagaCompensation<P> | SagaRequestStep<SagaCompensationContext<P>>,
            `${path}.compensate`,
            compensateTimeoutMs,
          );
    return Object.freeze({
      name: s.name,
      hasCompensation: s.compensate !== undefined,
      timeoutMs,
      compensateTimeoutMs,
      retry: resolveRetry(s.retry, SAGA_STEP_DEFAULTS.retry, `${path}.retry`),
      compensationRetry: resolveRetry(
        s.compensationRetry,
        SAGA_STEP_DEFAULTS.compensationRetry,
        `${path}.compensationRetry`,
      ),
      run,
      undo,
    });
  });
  return Object.freeze({ name: options.name, steps: Object.freeze(steps) });
}
