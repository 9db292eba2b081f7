import { backoffDelayMs } from './backoff.js';
import type { Clock } from './clock.js';
import { ClosedError, isRetryable, TimeoutError, type WireError } from './errors.js';
import type { Logger } from './logger.js';
import type { SagaCompensationContext, SagaDefinition, SagaRequester, SagaStep, SagaStepContext } from './saga.js';
import type { SagaEvent, SagaEventType } from './saga-orchestrator.js';
import { SAGA_FINAL_STATUSES, type SagaRepository, type SagaState, type SagaStatus } from './saga-repository.js';
import { delay, errorToWire, isTimeout, toJson, withOwner, withStep } from './saga-state.js';

/** What a saga run needs of its orchestrator. Internal: not exported from the package. */
export interface SagaRunHost {
  readonly ownerId: string;
  readonly repository: SagaRepository;
  readonly requester: SagaRequester;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly leaseMs: number;
  readonly requestTimeoutMs: number;
  readonly maxInterruptions: number;
  /** Whether the orchestrator is closing: runs stop after their current transition. */
  closing(): boolean;
  /** Publishes a saga event (never throws). */
  emit(state: SagaState, event: SagaEventType, extra: Partial<SagaEvent>): Promise<void>;
  /** The run stopped: final, released on close, taken over, or failed. */
  finished(run: SagaRun): void;
}

/** The error persisted for a step cut short by crashes more than `maxInterruptions` times. */
export const SAGA_INTERRUPTED = 'SAGA_INTERRUPTED';

/** Another orchestrator wrote the saga: this one stops driving it. */
class OwnershipLost extends Error {}

export const isFinalSagaStatus = (status: SagaStatus): boolean => SAGA_FINAL_STATUSES.includes(status);
const isFinal = isFinalSagaStatus;

function interrupted(step: string, times: number): WireError {
  return {
    code: SAGA_INTERRUPTED,
    message: `step ${step} was cut short by a crash or takeover ${times} times`,
    retryable: false,
  };
}

/**
 * One saga driven by one orchestrator: runs its actions forward, or its compensations backward,
 * persisting every transition as the next version (with the owner's lease) before going on.
 */
export class SagaRun {
  readonly #host: SagaRunHost;
  readonly #def: SagaDefinition<object>;
  #state: SagaState;
  readonly #controller = new AbortController();
  readonly #wakers = new Set<() => void>();
  #chain: Promise<void> = Promise.resolve();
  #pendingWrites = 0;
  #lost = false;
  /** Resolves when the run stops (it never rejects). */
  readonly done: Promise<void>;

  constructor(host: SagaRunHost, state: SagaState, def: SagaDefinition<object>, fresh: boolean) {
    this.#host = host;
    this.#state = state;
    this.#def = def;
    this.done = this.#drive(fresh);
  }

  get id(): string {
    return this.#state.id;
  }

  /** The state as last persisted. */
  get state(): SagaState {
    return this.#state;
  }

  /** Cuts a retry's wait short (on close). */
  wake(): void {
    for (const wake of this.#wakers) wake();
  }

  /** Renews the lease unless a write is under way or one renewed it lately. */
  renew(now: number): void {
    if (this.#pendingWrites > 0 || this.#lost || isFinal(this.#state.status)) return;
    if ((this.#state.leaseUntilMs ?? 0) - now > (this.#host.leaseMs * 2) / 3) return;
    this.#write((s) => s).catch((err: unknown) => {
      if (!(err instanceof OwnershipLost))
        this.#host.logger.warn({ err, sagaId: this.id }, 'renewing a saga lease failed');
    });
  }

  #emit(event: SagaEventType, extra: Partial<SagaEvent>): Promise<void> {
    return this.#host.emit(this.#state, event, extra);
  }

  async #drive(fresh: boolean): Promise<void> {
    try {
      if (fresh) await this.#emit('started', {});
      while (!this.#host.closing() && !this.#lost && !isFinal(this.#state.status)) {
        if (this.#state.status === 'running') await this.#forward();
        else await this.#backward();
      }
      if (!this.#lost && !isFinal(this.#state.status)) {
        await this.#write((s) => s, true);
      }
    } catch (err) {
      if (err instanceof OwnershipLost) {
        this.#host.logger.warn(
          { sagaId: this.id, owner: this.#host.ownerId },
          'saga was taken over by another orchestrator',
        );
      } else {
        this.#host.logger.error(
          { err, sagaId: this.id },
          'saga driver stopped; the saga is resumed once its lease passes',
        );
      }
    } finally {
      this.#host.finished(this);
    }
  }

  /** Runs the next action (or completes the saga). */
  async #forward(): Promise<void> {
    const i = this.#state.steps.findIndex((st) => st.status !== 'succeeded');
    if (i < 0) {
      await this.#write((s) => ({ ...s, status: 'completed' }));
      await this.#emit('completed', {});
      return;
    }
    const step = this.#def.steps[i] as SagaStep<object>;
    const st = this.#state.steps[i]!;
    if (st.status === 'running' && st.interruptions > this.#host.maxInterruptions) {
      const error = interrupted(st.name, st.interruptions);
      await this.#write((s) =>
        withStep(
          s,
          i,
          { status: 'failed', uncertain: true, error, finishedAtMs: this.#host.clock.now() },
          {
            status: 'compensating',
            error,
          },
        ),
      );
      await this.#emit('step-failed', { step: st.name, phase: 'action', retrying: false, uncertain: true, error });
      await this.#emit('compensating', { error });
      return;
    }
    const attempt = st.attempts + 1;
    await this.#write((s) =>
      withStep(s, i, { status: 'running', attempts: attempt, startedAtMs: st.startedAtMs ?? this.#host.clock.now() }),
    );
    const payload = toJson(this.#state.payload, 'payload') as object;
    let result: unknown;
    let nextPayload: object;
    try {
      result = await this.#attempt(step.name, step.timeoutMs, (signal, deadline) =>
        step.run(this.#context(step.name, attempt, st.interruptions > 0, payload, signal, deadline)),
      );
      result = toJson(result, `result of step ${step.name}`);
      nextPayload = toJson(payload, 'payload');
    } catch (err) {
      if (this.#lost) throw new OwnershipLost();
      const error = errorToWire(err);
      const failures = st.failures + 1;
      if (isRetryable(err) && failures < step.retry.maxAttempts) {
        await this.#write((s) => withStep(s, i, { failures, error }));
        await this.#emit('step-failed', { step: st.name, phase: 'action', attempt, retrying: true, error });
        await this.#sleep(backoffDelayMs(failures, step.retry.backoff));
        return;
      }
      const uncertain = isTimeout(err) || undefined;
      await this.#write((s) =>
        withStep(
          s,
          i,
          { status: 'failed', failures, error, uncertain, finishedAtMs: this.#host.clock.now() },
          {
            status: 'compensating',
            error,
          },
        ),
      );
      await this.#emit('step-failed', {
        step: st.name,
        phase: 'action',
        attempt,
        retrying: false,
        uncertain,
        error,
      });
      await this.#emit('compensating', { error });
      return;
    }
    await this.#write((s) =>
      withStep(s, i, { status: 'succeeded', result, finishedAtMs: this.#host.clock.now() }, { payload: nextPayload }),
    );
    await this.#emit('step-succeeded', { step: st.name, phase: 'action', attempt });
  }

  /** Runs the next compensation, last step first (or ends the saga compensated). */
  async #backward(): Promise<void> {
    const steps = this.#state.steps;
    let j = steps.length - 1;
    for (; j >= 0; j--) {
      const st = steps[j]!;
      if (st.status === 'succeeded' || st.status === 'compensating' || (st.status === 'failed' && st.uncertain)) break;
    }
    if (j < 0) {
      await this.#write((s) => ({ ...s, status: 'compensated' }));
      await this.#emit('compensated', { error: this.#state.error });
      return;
    }
    const step = this.#def.steps[j] as SagaStep<object>;
    const st = steps[j]!;
    if (!step.hasCompensation) {
      await this.#write((s) => withStep(s, j, { status: 'compensated' }));
      return;
    }
    const resumed = st.status === 'compensating' && st.interruptions > 0;
    if (resumed && st.interruptions > this.#host.maxInterruptions) {
      await this.#fail(j, st.compensationAttempts, interrupted(st.name, st.interruptions));
      return;
    }
    const attempt = st.compensationAttempts + 1;
    await this.#write((s) =>
      withStep(s, j, {
        status: 'compensating',
        compensationAttempts: attempt,
        interruptions: st.status === 'compensating' ? st.interruptions : 0,
      }),
    );
    const payload = toJson(this.#state.payload, 'payload') as object;
    const uncertain = st.uncertain === true;
    let nextPayload: object;
    try {
      await this.#attempt(step.name, step.compensateTimeoutMs, (signal, deadline) => {
        const ctx: SagaCompensationContext<object> = {
          ...this.#context(step.name, attempt, resumed, payload, signal, deadline),
          result: uncertain ? undefined : st.result,
          uncertain,
          error: this.#state.error,
        };
        return step.undo(ctx);
      });
      nextPayload = toJson(payload, 'payload');
    } catch (err) {
      if (this.#lost) throw new OwnershipLost();
      const error = errorToWire(err);
      const failures = st.compensationFailures + 1;
      if (isRetryable(err) && failures < step.compensationRetry.maxAttempts) {
        await this.#write((s) => withStep(s, j, { compensationFailures: failures, compensationError: error }));
        await this.#emit('step-failed', { step: st.name, phase: 'compensation', attempt, retrying: true, error });
        await this.#sleep(backoffDelayMs(failures, step.compensationRetry.backoff));
        return;
      }
      await this.#fail(j, attempt, error, failures);
      return;
    }
    await this.#write((s) => withStep(s, j, { status: 'compensated' }, { payload: nextPayload }));
    await this.#emit('step-compensated', { step: st.name, phase: 'compensation', attempt, uncertain });
  }

  /** A compensation failed for good: the saga is left `failed` for an operator. */
  async #fail(j: number, attempt: number, error: WireError, failures?: number): Promise<void> {
    const name = this.#state.steps[j]!.name;
    await this.#write((s) =>
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
    await this.#emit('step-failed', { step: name, phase: 'compensation', attempt, retrying: false, error });
    await this.#emit('failed', { error });
    this.#host.logger.error({ sagaId: this.id, saga: this.#state.name, step: name, error }, 'saga compensation failed');
  }

  #context(
    step: string,
    attempt: number,
    resumed: boolean,
    payload: object,
    signal: AbortSignal,
    deadline: number | undefined,
  ): SagaStepContext<object> {
    const results: Record<string, unknown> = {};
    for (const st of this.#state.steps)
      if (st.status === 'succeeded' || st.result !== undefined) results[st.name] = st.result;
    const requester = this.#host.requester;
    return {
      sagaId: this.id,
      sagaName: this.#state.name,
      step,
      attempt,
      resumed,
      payload,
      results: Object.freeze(results),
      signal,
      request: async <T>(topic: string, data: unknown, options?: { readonly timeoutMs?: number }) => {
        signal.throwIfAborted();
        const timeoutMs =
          options?.timeoutMs ??
          (deadline === undefined ? this.#host.requestTimeoutMs : Math.max(1, deadline - Date.now()));
        return (await requester(topic, data, { timeoutMs, signal, workflowid: this.id })) as T;
      },
    };
  }

  /** One run of an action or compensation, aborted by its timeout or by a takeover. */
  async #attempt<T>(
    name: string,
    timeoutMs: number | undefined,
    body: (signal: AbortSignal, deadline: number | undefined) => Promise<T>,
  ): Promise<T> {
    const ac = new AbortController();
    const onLost = () => ac.abort(this.#controller.signal.reason);
    this.#controller.signal.addEventListener('abort', onLost, { once: true });
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
      this.#controller.signal.removeEventListener('abort', onLost);
    }
  }

  /** Waits before a retry; cut short by close or a takeover. */
  async #sleep(ms: number): Promise<void> {
    if (this.#host.closing() || this.#lost) return;
    const pause = delay(ms);
    this.#wakers.add(pause.wake);
    await pause.promise;
    this.#wakers.delete(pause.wake);
  }

  /**
   * Persists `change(state)` as the next version, in order with the saga's other writes, renewing
   * the lease (or releasing it: `release`, and once the saga is final). Retries a repository that
   * fails with a retryable error; throws OwnershipLost when another orchestrator wrote the saga.
   */
  #write(change: (s: SagaState) => SagaState, release = false): Promise<void> {
    this.#pendingWrites++;
    const next = this.#chain.then(() => this.#save(change(this.#state), release));
    this.#chain = next.then(
      () => {
        this.#pendingWrites--;
      },
      () => {
        this.#pendingWrites--;
      },
    );
    return next;
  }

  async #save(changed: SagaState, release: boolean): Promise<void> {
    if (this.#lost) throw new OwnershipLost();
    const now = this.#host.clock.now();
    const free = release || isFinal(changed.status);
    const candidate = withOwner(
      { ...changed, version: this.#state.version + 1, updatedAtMs: now },
      free ? undefined : this.#host.ownerId,
      free ? undefined : now + this.#host.leaseMs,
    );
    for (let failures = 0; ; failures++) {
      let saved: boolean;
      try {
        saved = await this.#host.repository.save(candidate);
      } catch (err) {
        if (!isRetryable(err) || (this.#host.closing() && failures >= 5)) throw err;
        const delayMs = Math.min(5_000, 100 * 2 ** failures);
        this.#host.logger.warn({ err, sagaId: this.id, delayMs }, 'saving saga state failed; retrying');
        await delay(delayMs).promise;
        continue;
      }
      if (!saved && failures > 0) {
        // An earlier try may have been applied before its reply was lost: then the stored one is ours.
        const stored = await this.#host.repository.get(this.id);
        saved = stored?.version === candidate.version && stored.updatedAtMs === now && stored.owner === candidate.owner;
      }
      if (!saved) {
        this.#lost = true;
        this.#controller.abort(new ClosedError(`saga ${this.id} was taken over by another orchestrator`));
        throw new OwnershipLost();
      }
      this.#state = candidate;
      return;
    }
  }
}
