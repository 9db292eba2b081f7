import { backoffDelayMs } from './backoff.js';
import type { Bus } from './bus.js';
import type { Clock, IdGenerator } from './clock.js';
import { ClosedError, ConfigError, isRetryable, TimeoutError, ValidationError, type WireError } from './errors.js';
import type { Logger } from './logger.js';
import type { SagaCompensationContext, SagaDefinition, SagaRequester, SagaStep, SagaStepContext } from './saga.js';
import {
  SAGA_FINAL_STATUSES,
  SAGA_UNFINISHED_STATUSES,
  type SagaListFilter,
  type SagaRepository,
  type SagaState,
  type SagaStatus,
} from './saga-repository.js';
import {
  delay,
  dropUndefined,
  errorToWire,
  isTimeout,
  matchesDefinition,
  pendingStep,
  toJson,
  withOwner,
  withStep,
} from './saga-state.js';
import { nonNegativeNumber, positiveNumber } from './validate.js';

export interface SagaOrchestratorOptions {
  /** Saga events are published on it; its clock, ids and logger are the defaults. */
  readonly bus: Bus;
  readonly repository: SagaRepository;
  readonly sagas: readonly SagaDefinition<object>[];
  /** How `ctx.request` and request steps reach other agents. Default: `bus.request`. */
  readonly requester?: SagaRequester;
  readonly clock?: Clock;
  readonly ids?: IdGenerator;
  readonly logger?: Logger;
  /**
   * Who this orchestrator is in the sagas' leases (default: a new id per instance). Give a process
   * slot a stable id (a pod or host name) and its restart takes its own sagas back at once instead
   * of waiting for their leases to pass. Never run two live orchestrators with one id.
   */
  readonly ownerId?: string;
  /** How long a saga stays this orchestrator's without a write; renewed every third of it while it runs. */
  readonly leaseMs?: number;
  /** After `resume()`, how often to look for unfinished sagas whose lease has passed (0: never). */
  readonly scanIntervalMs?: number;
  /** Bounds `ctx.request` and request steps without a timeout of their own. */
  readonly requestTimeoutMs?: number;
  /** A step cut short by a crash more often than this fails (uncertain) instead of running again: no crash loop. */
  readonly maxInterruptions?: number;
  /** Events go to `<topicPrefix>.<saga name>.<event>`. */
  readonly topicPrefix?: string;
  /** Whether to publish saga events. */
  readonly events?: boolean;
  /** How often `wait()` re-reads a saga that another orchestrator drives. */
  readonly waitPollMs?: number;
}

export const SAGA_ORCHESTRATOR_DEFAULTS = Object.freeze({
  leaseMs: 30_000,
  scanIntervalMs: 10_000,
  requestTimeoutMs: 30_000,
  maxInterruptions: 3,
  topicPrefix: 'saga',
  events: true,
  waitPollMs: 250,
});

/** The events published to `<topicPrefix>.<saga name>.<event>`, with `workflowid` = the saga id. */
export type SagaEventType =
  | 'started'
  | 'step-succeeded'
  | 'step-failed'
  | 'compensating'
  | 'step-compensated'
  | 'completed'
  | 'compensated'
  | 'failed';

/** The data of a saga event. */
export interface SagaEvent {
  readonly sagaId: string;
  readonly saga: string;
  readonly event: SagaEventType;
  /** The saga's status after the transition. */
  readonly status: SagaStatus;
  readonly step?: string;
  readonly phase?: 'action' | 'compensation';
  readonly attempt?: number;
  /** `step-failed`: whether it will be tried again. */
  readonly retrying?: boolean;
  readonly uncertain?: boolean;
  readonly error?: WireError;
}

/** The error persisted for a step cut short by crashes more than `maxInterruptions` times. */
export const SAGA_INTERRUPTED = 'SAGA_INTERRUPTED';

/** Another orchestrator wrote the saga: this one stops driving it. */
class OwnershipLost extends Error {}

/** One saga this orchestrator drives. */
class Run {
  readonly controller = new AbortController();
  chain: Promise<void> = Promise.resolve();
  pendingWrites = 0;
  lost = false;
  done: Promise<void> = Promise.resolve();
  readonly wakers = new Set<() => void>();
  constructor(
    public state: SagaState,
    readonly def: SagaDefinition<object>,
  ) {}
  get id(): string {
    return this.state.id;
  }
}

const isFinal = (status: SagaStatus) => SAGA_FINAL_STATUSES.includes(status);

/**
 * Runs sagas (see `defineSaga`) and keeps their state in a {@link SagaRepository} after every step
 * transition, so that a crashed orchestrator's sagas are resumed from where they were.
 *
 * Ownership: every write carries this orchestrator's `ownerId` and a lease (`leaseMs`, renewed while
 * the saga runs) and is refused unless it follows the stored version. Another orchestrator takes a
 * saga over only once its lease has passed (or at once if it has the same `ownerId`); the old
 * owner's next write is then refused and it stops driving that saga.
 */
export class SagaOrchestrator {
  readonly ownerId: string;
  readonly #bus: Bus;
  readonly #repository: SagaRepository;
  readonly #definitions = new Map<string, SagaDefinition<object>>();
  readonly #requester: SagaRequester;
  readonly #clock: Clock;
  readonly #ids: IdGenerator;
  readonly #logger: Logger;
  readonly #leaseMs: number;
  readonly #scanIntervalMs: number;
  readonly #requestTimeoutMs: number;
  readonly #maxInterruptions: number;
  readonly #topicPrefix: string;
  readonly #events: boolean;
  readonly #waitPollMs: number;
  readonly #active = new Map<string, Run>();
  readonly #claiming = new Set<string>();
  readonly #wakers = new Set<() => void>();
  readonly #renewer: NodeJS.Timeout;
  #scanTimer: NodeJS.Timeout | undefined;
  #scanning: Promise<string[]> | undefined;
  #closing: Promise<void> | undefined;

  constructor(options: SagaOrchestratorOptions) {
    const o = options ?? ({} as SagaOrchestratorOptions);
    if (typeof o.bus?.publish !== 'function') throw new ConfigError('a Bus is required', { path: 'bus' });
    if (typeof o.repository?.save !== 'function') {
      throw new ConfigError('a SagaRepository is required', { path: 'repository' });
    }
    if (!Array.isArray(o.sagas)) throw new ConfigError('must be a list of saga definitions', { path: 'sagas' });
    o.sagas.forEach((def, i) => {
      if (typeof def?.name !== 'string' || !Array.isArray(def.steps)) {
        throw new ConfigError('must be made by defineSaga', { path: `sagas[${i}]` });
      }
      if (this.#definitions.has(def.name)) throw new ConfigError(`duplicate saga ${def.name}`, { path: `sagas[${i}]` });
      this.#definitions.set(def.name, def);
    });
    if (o.requester !== undefined && typeof o.requester !== 'function') {
      throw new ConfigError('must be a function (topic, data, options) => Promise', { path: 'requester' });
    }
    this.#bus = o.bus;
    this.#repository = o.repository;
    this.#requester = o.requester ?? busRequester(o.bus);
    this.#clock = o.clock ?? o.bus.clock;
    this.#ids = o.ids ?? o.bus.ids;
    this.#logger = o.logger ?? o.bus.logger;
    this.ownerId = o.ownerId ?? `orchestrator-${this.#ids()}`;
    if (typeof this.ownerId !== 'string' || this.ownerId === '') {
      throw new ConfigError('must be a non-empty string', { path: 'ownerId' });
    }
    const d = SAGA_ORCHESTRATOR_DEFAULTS;
    this.#leaseMs = positiveNumber(o.leaseMs ?? d.leaseMs, 'leaseMs');
    this.#scanIntervalMs = nonNegativeNumber(o.scanIntervalMs ?? d.scanIntervalMs, 'scanIntervalMs');
    this.#requestTimeoutMs = positiveNumber(o.requestTimeoutMs ?? d.requestTimeoutMs, 'requestTimeoutMs');
    this.#maxInterruptions = nonNegativeNumber(o.maxInterruptions ?? d.maxInterruptions, 'maxInterruptions');
    this.#topicPrefix = o.topicPrefix ?? d.topicPrefix;
    if (typeof this.#topicPrefix !== 'string' || this.#topicPrefix === '') {
      throw new ConfigError('must be a non-empty topic prefix', { path: 'topicPrefix' });
    }
    this.#events = o.events ?? d.events;
    this.#waitPollMs = positiveNumber(o.waitPollMs ?? d.waitPollMs, 'waitPollMs');
    this.#renewer = setInterval(() => this.#renewLeases(), Math.max(1, Math.floor(this.#leaseMs / 3)));
    this.#renewer.unref();
  }

  /** Sagas this orchestrator is driving right now. */
  get active(): number {
    return this.#active.size;
  }

  /**
   * Starts a saga and resolves with its id once its state is persisted (the steps run in the
   * background: see `wait`). Idempotent on `id`: starting an existing saga runs nothing again
   * (an abandoned unfinished one is taken over when its lease allows).
   */
  async start(sagaName: string, payload: object, options: { readonly id?: string } = {}): Promise<string> {
    this.#assertOpen();
    const def = this.#definitions.get(sagaName);
    if (!def) throw new ConfigError(`no saga named ${String(sagaName)} is registered`, { path: 'sagaName' });
    if (typeof payload !== 'object' || payload === null || Array.isArray(payload)) {
      throw new ConfigError('must be an object', { path: 'payload' });
    }
    const id = options.id ?? this.#ids();
    if (typeof id !== 'string' || id === '') throw new ConfigError('must be a non-empty string', { path: 'id' });
    const now = this.#clock.now();
    const state: SagaState = {
      id,
      name: def.name,
      status: 'running',
      payload: toJson(payload, 'payload'),
      steps: def.steps.map((s) => pendingStep(s.name)),
      createdAtMs: now,
      updatedAtMs: now,
      version: 1,
      owner: this.ownerId,
      leaseUntilMs: now + this.#leaseMs,
    };
    if (await this.#repository.create(state)) {
      this.#launch(state, def, true);
      return id;
    }
    const existing = await this.#repository.get(id);
    if (existing && existing.name !== def.name) {
      throw new ConfigError(`saga ${id} exists as a ${existing.name} saga`, { path: 'id' });
    }
    if (existing) await this.#takeOver(existing);
    return id;
  }

  /**
   * Takes over every unfinished saga whose lease has passed (or is this orchestrator's own, as
   * after a restart with the same `ownerId`) and continues it from its persisted state; resolves
   * with their ids. Then keeps looking every `scanIntervalMs` until `close()`.
   */
  async resume(): Promise<string[]> {
    this.#assertOpen();
    const taken = await this.#scan();
    if (this.#scanIntervalMs > 0 && this.#scanTimer === undefined && !this.#closing) {
      this.#scanTimer = setInterval(() => {
        this.#scan().catch((err: unknown) => this.#logger.warn({ err }, 'saga scan failed'));
      }, this.#scanIntervalMs);
      this.#scanTimer.unref();
    }
    return taken;
  }

  get(id: string): Promise<SagaState | undefined> {
    return this.#repository.get(id);
  }

  /** For operators: e.g. `list({ status: 'failed' })`. */
  list(filter?: SagaListFilter): Promise<SagaState[]> {
    return this.#repository.list(filter);
  }

  /**
   * Resolves with the saga's state once it is `completed`, `compensated` or `failed`, whichever
   * orchestrator drives it. Rejects with ValidationError for an unknown id, TimeoutError after
   * `timeoutMs`, ClosedError when this orchestrator closes.
   */
  async wait(id: string, options: { readonly timeoutMs?: number } = {}): Promise<SagaState> {
    const timeoutMs = options.timeoutMs === undefined ? undefined : positiveNumber(options.timeoutMs, 'timeoutMs');
    const deadline = timeoutMs === undefined ? Number.POSITIVE_INFINITY : Date.now() + timeoutMs;
    for (;;) {
      const s = await this.#repository.get(id);
      if (!s) throw new ValidationError(`no saga with id ${id}`);
      if (isFinal(s.status)) return s;
      if (this.#closing) throw new ClosedError('saga orchestrator is closed');
      const left = deadline - Date.now();
      if (left <= 0) throw new TimeoutError(`saga ${id} did not finish within ${timeoutMs} ms (it is ${s.status})`);
      const pause = delay(Math.min(left, this.#waitPollMs));
      this.#wakers.add(pause.wake);
      const run = this.#active.get(id);
      await Promise.race([pause.promise, run ? run.done : pause.promise]);
      pause.wake();
      this.#wakers.delete(pause.wake);
    }
  }

  /**
   * Stops: no new sagas or steps; running steps finish (their timeouts bound them) and are saved,
   * then each unfinished saga's lease is released so another orchestrator can take it over at once.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      clearInterval(this.#scanTimer);
      for (const wake of this.#wakers) wake();
      for (const run of this.#active.values()) for (const wake of run.wakers) wake();
      while (this.#active.size > 0) await Promise.all([...this.#active.values()].map((r) => r.done));
      clearInterval(this.#renewer);
    })();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #assertOpen(): void {
    if (this.#closing) throw new ClosedError('saga orchestrator is closed');
  }

  #scan(): Promise<string[]> {
    this.#scanning ??= (async () => {
      try {
        const taken: string[] = [];
        for (const s of await this.#repository.list({ status: SAGA_UNFINISHED_STATUSES })) {
          if (await this.#takeOver(s)) taken.push(s.id);
        }
        return taken;
      } finally {
        this.#scanning = undefined;
      }
    })();
    return this.#scanning;
  }

  /** Claims an unfinished saga if its lease allows and drives it; resolves whether it did. */
  async #takeOver(s: SagaState): Promise<boolean> {
    if (this.#closing || isFinal(s.status) || this.#active.has(s.id) || this.#claiming.has(s.id)) return false;
    const def = this.#definitions.get(s.name);
    if (!def) {
      this.#logger.debug({ sagaId: s.id, saga: s.name }, 'unfinished saga of a kind this orchestrator does not know');
      return false;
    }
    if (!matchesDefinition(s, def)) {
      this.#logger.error(
        { sagaId: s.id, saga: s.name, steps: s.steps.map((st) => st.name) },
        'unfinished saga does not match its definition (steps changed?): left for an operator',
      );
      return false;
    }
    const now = this.#clock.now();
    if (s.owner !== undefined && s.owner !== this.ownerId && (s.leaseUntilMs ?? 0) > now) return false;
    this.#claiming.add(s.id);
    try {
      // A step that was running (or compensating) when its owner died was cut short: count it.
      const steps = s.steps.map((st) =>
        st.status === 'running' || st.status === 'compensating' ? { ...st, interruptions: st.interruptions + 1 } : st,
      );
      const claimed = withOwner(
        { ...s, steps, version: s.version + 1, updatedAtMs: now },
        this.ownerId,
        now + this.#leaseMs,
      );
      if (!(await this.#repository.save(claimed))) return false;
      this.#logger.info({ sagaId: s.id, saga: s.name, previousOwner: s.owner }, 'saga taken over');
      this.#launch(claimed, def, false);
      return true;
    } finally {
      this.#claiming.delete(s.id);
    }
  }

  #launch(state: SagaState, def: SagaDefinition<object>, fresh: boolean): void {
    const run = new Run(state, def);
    this.#active.set(run.id, run);
    run.done = this.#drive(run, fresh);
  }

  async #drive(run: Run, fresh: boolean): Promise<void> {
    try {
      if (fresh) await this.#emit(run, 'started', {});
      while (!this.#closing && !run.lost && !isFinal(run.state.status)) {
        if (run.state.status === 'running') await this.#forward(run);
        else await this.#backward(run);
      }
      if (!run.lost && !isFinal(run.state.status)) {
        await this.#write(run, (s) => s, true);
      }
    } catch (err) {
      if (err instanceof OwnershipLost) {
        this.#logger.warn({ sagaId: run.id, owner: this.ownerId }, 'saga was taken over by another orchestrator');
      } else {
        this.#logger.error({ err, sagaId: run.id }, 'saga driver stopped; the saga is resumed once its lease passes');
      }
    } finally {
      this.#active.delete(run.id);
    }
  }

  /** Runs the next action (or completes the saga). */
  async #forward(run: Run): Promise<void> {
    const i = run.state.steps.findIndex((st) => st.status !== 'succeeded');
    if (i < 0) {
      await this.#write(run, (s) => ({ ...s, status: 'completed' }));
      await this.#emit(run, 'completed', {});
      return;
    }
    const step = run.def.steps[i] as SagaStep<object>;
    const st = run.state.steps[i]!;
    if (st.status === 'running' && st.interruptions > this.#maxInterruptions) {
      const error = interrupted(st.name, st.interruptions);
      await this.#write(run, (s) =>
        withStep(
          s,
          i,
          { status: 'failed', uncertain: true, error, finishedAtMs: this.#clock.now() },
          {
            status: 'compensating',
            error,
          },
        ),
      );
      await this.#emit(run, 'step-failed', { step: st.name, phase: 'action', retrying: false, uncertain: true, error });
      await this.#emit(run, 'compensating', { error });
      return;
    }
    const attempt = st.attempts + 1;
    await this.#write(run, (s) =>
      withStep(s, i, { status: 'running', attempts: attempt, startedAtMs: st.startedAtMs ?? this.#clock.now() }),
    );
    const payload = toJson(run.state.payload, 'payload') as object;
    let result: unknown;
    let nextPayload: object;
    try {
      result = await this.#attempt(run, step.name, step.timeoutMs, (signal, deadline) =>
        step.run(this.#context(run, step.name, attempt, st.interruptions > 0, payload, signal, deadline)),
      );
      result = toJson(result, `result of step ${step.name}`);
      nextPayload = toJson(payload, 'payload');
    } catch (err) {
      if (run.lost) throw new OwnershipLost();
      const error = errorToWire(err);
      const failures = st.failures + 1;
      if (isRetryable(err) && failures < step.retry.maxAttempts) {
        await this.#write(run, (s) => withStep(s, i, { failures, error }));
        await this.#emit(run, 'step-failed', { step: st.name, phase: 'action', attempt, retrying: true, error });
        await this.#sleep(run, backoffDelayMs(failures, step.retry.backoff));
        return;
      }
      const uncertain = isTimeout(err) || undefined;
      await this.#write(run, (s) =>
        withStep(
          s,
          i,
          { status: 'failed', failures, error, uncertain, finishedAtMs: this.#clock.now() },
          {
            status: 'compensating',
            error,
          },
        ),
      );
      await this.#emit(run, 'step-failed', {
        step: st.name,
        phase: 'action',
        attempt,
        retrying: false,
        uncertain,
        error,
      });
      await this.#emit(run, 'compensating', { error });
      return;
    }
    await this.#write(run, (s) =>
      withStep(s, i, { status: 'succeeded', result, finishedAtMs: this.#clock.now() }, { payload: nextPayload }),
    );
    await this.#emit(run, 'step-succeeded', { step: st.name, phase: 'action', attempt });
  }

  /** Runs the next compensation, last step first (or ends the saga compensated). */
  async #backward(run: Run): Promise<void> {
    const steps = run.state.steps;
    let j = steps.length - 1;
    for (; j >= 0; j--) {
      const st = steps[j]!;
      if (st.status === 'succeeded' || st.status === 'compensating' || (st.status === 'failed' && st.uncertain)) break;
    }
    if (j < 0) {
      await this.#write(run, (s) => ({ ...s, status: 'compensated' }));
      await this.#emit(run, 'compensated', { error: run.state.error });
      return;
    }
    const step = run.def.steps[j] as SagaStep<object>;
    const st = steps[j]!;
    if (!step.hasCompensation) {
      await this.#write(run, (s) => withStep(s, j, { status: 'compensated' }));
      return;
    }
    const resumed = st.status === 'compensating' && st.interruptions > 0;
    if (resumed && st.interruptions > this.#maxInterruptions) {
      await this.#fail(run, j, st.compensationAttempts, interrupted(st.name, st.interruptions));
      return;
    }
    const attempt = st.compensationAttempts + 1;
    await this.#write(run, (s) =>
      withStep(s, j, {
        status: 'compensating',
        compensationAttempts: attempt,
        interruptions: st.status === 'compensating' ? st.interruptions : 0,
      }),
    );
    const payload = toJson(run.state.payload, 'payload') as object;
    const uncertain = st.uncertain === true;
    let nextPayload: object;
    try {
      await this.#attempt(run, step.name, step.compensateTimeoutMs, (signal, deadline) => {
        const ctx: SagaCompensationContext<object> = {
          ...this.#context(run, step.name, attempt, resumed, payload, signal, deadline),
          result: uncertain ? undefined : st.result,
          uncertain,
          error: run.state.error,
        };
        return step.undo(ctx);
      });
      nextPayload = toJson(payload, 'payload');
    } catch (err) {
      if (run.lost) throw new OwnershipLost();
      const error = errorToWire(err);
      const failures = st.compensationFailures + 1;
      if (isRetryable(err) && failures < step.compensationRetry.maxAttempts) {
        await this.#write(run, (s) => withStep(s, j, { compensationFailures: failures, compensationError: error }));
        await this.#emit(run, 'step-failed', { step: st.name, phase: 'compensation', attempt, retrying: true, error });
        await this.#sleep(run, backoffDelayMs(failures, step.compensationRetry.backoff));
        return;
      }
      await this.#fail(run, j, attempt, error, failures);
      return;
    }
    await this.#write(run, (s) => withStep(s, j, { status: 'compensated' }, { payload: nextPayload }));
    await this.#emit(run, 'step-compensated', { step: st.name, phase: 'compensation', attempt, uncertain });
  }

  /** A compensation failed for good: the saga is left `failed` for an operator. */
  async #fail(run: Run, j: number, attempt: number, error: WireError, failures?: number): Promise<void> {
    const name = run.state.steps[j]!.name;
    await this.#write(run, (s) =>
      withStep(
        s,
        j,
        { status: 'compensation-failed', compensationError: error, compensationFailures: failures },
        {
          status: 'failed',
          error,
        },
      ),
    );
    await this.#emit(run, 'step-failed', { step: name, phase: 'compensation', attempt, retrying: false, error });
    await this.#emit(run, 'failed', { error });
    this.#logger.error({ sagaId: run.id, saga: run.state.name, step: name, error }, 'saga compensation failed');
  }

  #context(
    run: Run,
    step: string,
    attempt: number,
    resumed: boolean,
    payload: object,
    signal: AbortSignal,
    deadline: number | undefined,
  ): SagaStepContext<object> {
    const results: Record<string, unknown> = {};
    for (const st of run.state.steps)
      if (st.status === 'succeeded' || st.result !== undefined) results[st.name] = st.result;
    const requester = this.#requester;
    return {
      sagaId: run.id,
      sagaName: run.state.name,
      step,
      attempt,
      resumed,
      payload,
      results: Object.freeze(results),
      signal,
      request: async <T>(topic: string, data: unknown, options?: { readonly timeoutMs?: number }) => {
        signal.throwIfAborted();
        const timeoutMs =
          options?.timeoutMs ?? (deadline === undefined ? this.#requestTimeoutMs : Math.max(1, deadline - Date.now()));
        return (await requester(topic, data, { timeoutMs, signal, workflowid: run.id })) as T;
      },
    };
  }

  /** One run of an action or compensation, aborted by its timeout or by a takeover. */
  async #attempt<T>(
    run: Run,
    name: string,
    timeoutMs: number | undefined,
    body: (signal: AbortSignal, deadline: number | undefined) => Promise<T>,
  ): Promise<T> {
    const ac = new AbortController();
    const onLost = () => ac.abort(run.controller.signal.reason);
    run.controller.signal.addEventListener('abort', onLost, { once: true });
    const aborted = new Promise<never>((_, reject) => {
      ac.signal.addEventListener('abort', () => reject(ac.signal.reason), { once: true });
    });
    aborted.catch(() => {});
    const timer =
      timeoutMs === undefined
        ? undefined
        : setTimeout(() => ac.abort(new TimeoutError(`step ${name} did not finish within ${timeoutMs} ms`)), timeoutMs);
    try {
      return await Promise.race([
        body(ac.signal, timeoutMs === undefined ? undefined : Date.now() + timeoutMs),
        aborted,
      ]);
    } finally {
      clearTimeout(timer);
      run.controller.signal.removeEventListener('abort', onLost);
    }
  }

  /** Waits before a retry; cut short by close or a takeover. */
  async #sleep(run: Run, ms: number): Promise<void> {
    if (this.#closing || run.lost) return;
    const pause = delay(ms);
    run.wakers.add(pause.wake);
    await pause.promise;
    run.wakers.delete(pause.wake);
  }

  /**
   * Persists `change(state)` as the next version, in order with the saga's other writes, renewing
   * the lease (or releasing it: `release`, and once the saga is final). Retries a repository that
   * fails with a retryable error; throws OwnershipLost when another orchestrator wrote the saga.
   */
  #write(run: Run, change: (s: SagaState) => SagaState, release = false): Promise<void> {
    run.pendingWrites++;
    const next = run.chain.then(() => this.#save(run, change(run.state), release));
    run.chain = next.then(
      () => {
        run.pendingWrites--;
      },
      () => {
        run.pendingWrites--;
      },
    );
    return next;
  }

  async #save(run: Run, changed: SagaState, release: boolean): Promise<void> {
    if (run.lost) throw new OwnershipLost();
    const now = this.#clock.now();
    const free = release || isFinal(changed.status);
    const candidate = withOwner(
      { ...changed, version: run.state.version + 1, updatedAtMs: now },
      free ? undefined : this.ownerId,
      free ? undefined : now + this.#leaseMs,
    );
    for (let failures = 0; ; failures++) {
      let saved: boolean;
      try {
        saved = await this.#repository.save(candidate);
      } catch (err) {
        if (!isRetryable(err) || (this.#closing && failures >= 5)) throw err;
        const delayMs = Math.min(5_000, 100 * 2 ** failures);
        this.#logger.warn({ err, sagaId: run.id, delayMs }, 'saving saga state failed; retrying');
        await delay(delayMs).promise;
        continue;
      }
      if (!saved && failures > 0) {
        // An earlier try may have been applied before its reply was lost: then the stored one is ours.
        const stored = await this.#repository.get(run.id);
        saved = stored?.version === candidate.version && stored.updatedAtMs === now && stored.owner === candidate.owner;
      }
      if (!saved) {
        run.lost = true;
        run.controller.abort(new ClosedError(`saga ${run.id} was taken over by another orchestrator`));
        throw new OwnershipLost();
      }
      run.state = candidate;
      return;
    }
  }

  #renewLeases(): void {
    const now = this.#clock.now();
    for (const run of this.#active.values()) {
      if (run.pendingWrites > 0 || run.lost || isFinal(run.state.status)) continue;
      if ((run.state.leaseUntilMs ?? 0) - now > (this.#leaseMs * 2) / 3) continue;
      this.#write(run, (s) => s).catch((err: unknown) => {
        if (!(err instanceof OwnershipLost)) this.#logger.warn({ err, sagaId: run.id }, 'renewing a saga lease failed');
      });
    }
  }

  async #emit(run: Run, event: SagaEventType, extra: Partial<SagaEvent>): Promise<void> {
    if (!this.#events) return;
    const s = run.state;
    const data: SagaEvent = { sagaId: s.id, saga: s.name, event, status: s.status, ...dropUndefined(extra) };
    try {
      await this.#bus.publish(`${this.#topicPrefix}.${s.name}.${event}`, data, { workflowid: s.id });
    } catch (err) {
      this.#logger.warn({ err, sagaId: s.id, event }, 'publishing a saga event failed');
    }
  }
}

function interrupted(step: string, times: number): WireError {
  return {
    code: SAGA_INTERRUPTED,
    message: `step ${step} was cut short by a crash or takeover ${times} times`,
    retryable: false,
  };
}

/** `bus.request` as a SagaRequester: the saga id travels as the request's `workflowid`. */
function busRequester(bus: Bus): SagaRequester {
  return (topic, data, o) =>
    bus.request(topic, data, {
      timeoutMs: Math.max(1, Math.ceil(o.timeoutMs)),
      signal: o.signal,
      workflowid: o.workflowid,
    });
}

/** Creates a saga orchestrator (see {@link SagaOrchestrator}). */
export function sagaOrchestrator(options: SagaOrchestratorOptions): SagaOrchestrator {
  return new SagaOrchestrator(options);
}
