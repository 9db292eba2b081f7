import type { Bus } from './bus.js';
import type { Clock, IdGenerator } from './clock.js';
import { ClosedError, ConfigError, TimeoutError, ValidationError, type WireError } from './errors.js';
import type { Logger } from './logger.js';
import type { SagaDefinition, SagaRequester } from './saga.js';
import {
  SAGA_UNFINISHED_STATUSES,
  type SagaListFilter,
  type SagaRepository,
  type SagaState,
  type SagaStatus,
} from './saga-repository.js';
import { isFinalSagaStatus, SagaRun, type SagaRunHost } from './saga-run.js';
import { delay, dropUndefined, matchesDefinition, pendingStep, toJson, withOwner } from './saga-state.js';
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

export { SAGA_INTERRUPTED } from './saga-run.js';

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
  readonly #active = new Map<string, SagaRun>();
  readonly #host: SagaRunHost;
  readonly #claiming = new Set<string>();
  readonly #wakers = new Set<() => void>();
  /** start() calls and scans under way: close waits for them, so no saga is launched after it. */
  readonly #inflight = new Set<Promise<unknown>>();
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
    this.#host = {
      ownerId: this.ownerId,
      repository: this.#repository,
      requester: this.#requester,
      clock: this.#clock,
      logger: this.#logger,
      leaseMs: this.#leaseMs,
      requestTimeoutMs: this.#requestTimeoutMs,
      maxInterruptions: this.#maxInterruptions,
      closing: () => this.#closing !== undefined,
      emit: (state, event, extra) => this.#emit(state, event, extra),
      finished: (run) => {
        if (this.#active.get(run.id) === run) this.#active.delete(run.id);
      },
    };
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
  start(sagaName: string, payload: object, options: { readonly id?: string } = {}): Promise<string> {
    return this.#track(this.#start(sagaName, payload, options));
  }

  async #start(sagaName: string, payload: object, options: { readonly id?: string }): Promise<string> {
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
      if (isFinalSagaStatus(s.status)) return s;
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
      for (const run of this.#active.values()) run.wake();
      await Promise.allSettled([...this.#inflight]);
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

  #track<T>(p: Promise<T>): Promise<T> {
    this.#inflight.add(p);
    const untrack = () => this.#inflight.delete(p);
    p.then(untrack, untrack);
    return p;
  }

  #scan(): Promise<string[]> {
    this.#scanning ??= this.#track(
      (async () => {
        try {
          const taken: string[] = [];
          for (const s of await this.#repository.list({ status: SAGA_UNFINISHED_STATUSES })) {
            if (await this.#takeOver(s)) taken.push(s.id);
          }
          return taken;
        } finally {
          this.#scanning = undefined;
        }
      })(),
    );
    return this.#scanning;
  }

  /** Claims an unfinished saga if its lease allows and drives it; resolves whether it did. */
  async #takeOver(s: SagaState): Promise<boolean> {
    if (this.#closing || isFinalSagaStatus(s.status) || this.#active.has(s.id) || this.#claiming.has(s.id))
      return false;
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
    const run = new SagaRun(this.#host, state, def, fresh);
    this.#active.set(run.id, run);
  }

  #renewLeases(): void {
    const now = this.#clock.now();
    for (const run of this.#active.values()) run.renew(now);
  }

  /** Publishes a saga event; a failure is logged, never thrown (the repository is the truth). */
  async #emit(s: SagaState, event: SagaEventType, extra: Partial<SagaEvent>): Promise<void> {
    if (!this.#events) return;
    const data: SagaEvent = { sagaId: s.id, saga: s.name, event, status: s.status, ...dropUndefined(extra) };
    try {
      await this.#bus.publish(`${this.#topicPrefix}.${s.name}.${event}`, data, { workflowid: s.id });
    } catch (err) {
      this.#logger.warn({ err, sagaId: s.id, event }, 'publishing a saga event failed');
    }
  }
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
