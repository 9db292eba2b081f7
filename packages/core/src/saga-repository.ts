import type { WireError } from './errors.js';
import { positiveInteger } from './validate.js';

/**
 * Where a saga stands. `running` → `completed`, or `running` → `compensating` → `compensated`;
 * `failed` when a compensation failed after its retries: it stays so, with the error, for an operator.
 */
export type SagaStatus = 'running' | 'compensating' | 'completed' | 'compensated' | 'failed';

/** The statuses a saga ends in. */
export const SAGA_FINAL_STATUSES: readonly SagaStatus[] = Object.freeze(['completed', 'compensated', 'failed']);
/** The statuses of a saga an orchestrator still has to drive (what `resume()` looks for). */
export const SAGA_UNFINISHED_STATUSES: readonly SagaStatus[] = Object.freeze(['running', 'compensating']);

/**
 * Where a step stands. An action runs `pending` → `running` → `succeeded` (or `failed`, which
 * sends the saga compensating); a compensation `compensating` → `compensated` (or
 * `compensation-failed`, which leaves the saga `failed`).
 */
export type SagaStepStatus =
  | 'pending'
  | 'running'
  | 'succeeded'
  | 'failed'
  | 'compensating'
  | 'compensated'
  | 'compensation-failed';

export interface SagaStepState {
  readonly name: string;
  readonly status: SagaStepStatus;
  /** Runs of the action started (including runs cut short by a crash). */
  readonly attempts: number;
  /** Runs of the action that failed. */
  readonly failures: number;
  readonly compensationAttempts: number;
  readonly compensationFailures: number;
  /** Runs of the current phase (action or compensation) cut short by a crash or takeover. */
  readonly interruptions: number;
  /** The action's result (JSON), once it succeeded. */
  readonly result?: unknown;
  /** The action may or may not have taken effect (it timed out, or was interrupted too often). */
  readonly uncertain?: boolean;
  /** The action's last error. */
  readonly error?: WireError;
  readonly compensationError?: WireError;
  readonly startedAtMs?: number;
  readonly finishedAtMs?: number;
}

/** A saga as persisted after every step transition. Everything in it is plain JSON. */
export interface SagaState<P = unknown> {
  readonly id: string;
  /** The saga definition's name. */
  readonly name: string;
  readonly status: SagaStatus;
  /** The shared payload, as the last step that succeeded left it. */
  readonly payload: P;
  readonly steps: readonly SagaStepState[];
  /** Why it compensated (the failed step's error), or why it failed (the compensation's error). */
  readonly error?: WireError;
  readonly createdAtMs: number;
  readonly updatedAtMs: number;
  /** Incremented by every write; a write is refused unless it follows the stored version (optimistic concurrency). */
  readonly version: number;
  /** The orchestrator driving it, while unfinished. */
  readonly owner?: string;
  /** The owner's lease: another orchestrator may take the saga over once it has passed. */
  readonly leaseUntilMs?: number;
}

export interface SagaListFilter {
  readonly status?: SagaStatus | readonly SagaStatus[];
  /** The saga definition's name. */
  readonly name?: string;
  /** Default: all. */
  readonly limit?: number;
}

/**
 * Durable saga state. Writes are optimistic: `save` stores a state only if the stored one is the
 * version just before it, so two orchestrators can never both advance one saga.
 */
export interface SagaRepository {
  /** Stores a new saga; resolves false (and changes nothing) when one with its id exists. */
  create(state: SagaState): Promise<boolean>;
  get(id: string): Promise<SagaState | undefined>;
  /** Stores `state` if the stored saga's version is `state.version - 1`; resolves whether it did. */
  save(state: SagaState): Promise<boolean>;
  /** Sagas matching the filter, oldest (by `createdAtMs`) first. */
  list(filter?: SagaListFilter): Promise<SagaState[]>;
  /** Forgets a saga (an operator's clean-up); resolves whether there was one. */
  delete(id: string): Promise<boolean>;
}

/** The statuses a filter asks for (all when absent). */
export function sagaFilterStatuses(filter: SagaListFilter | undefined): readonly SagaStatus[] | undefined {
  const s = filter?.status;
  if (s === undefined) return undefined;
  return typeof s === 'string' ? [s] : s;
}

/** The limit a filter asks for (validated), or undefined for all. */
export function sagaFilterLimit(filter: SagaListFilter | undefined): number | undefined {
  return filter?.limit === undefined ? undefined : positiveInteger(filter.limit, 'limit');
}

/** Orders sagas oldest first (ties by id), as every repository lists them. */
export function compareSagas(a: SagaState, b: SagaState): number {
  return a.createdAtMs - b.createdAtMs || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

/**
 * An in-process repository: state is lost with the process (tests, single-process tools). It
 * stores JSON copies, so what comes back is what a durable repository would give.
 */
export function memorySagaRepository(): SagaRepository {
  const sagas = new Map<string, string>();
  const read = (id: string) => {
    const json = sagas.get(id);
    return json === undefined ? undefined : (JSON.parse(json) as SagaState);
  };
  return {
    async create(state) {
      if (sagas.has(state.id)) return false;
      sagas.set(state.id, JSON.stringify(state));
      return true;
    },
    async get(id) {
      return read(id);
    },
    async save(state) {
      const current = read(state.id);
      if (current === undefined || current.version !== state.version - 1) return false;
      sagas.set(state.id, JSON.stringify(state));
      return true;
    },
    async list(filter) {
      const statuses = sagaFilterStatuses(filter);
      const limit = sagaFilterLimit(filter);
      const out = [...sagas.keys()]
        .map((id) => read(id) as SagaState)
        .filter(
          (s) => (statuses === undefined || statuses.includes(s.status)) && (!filter?.name || s.name === filter.name),
        )
        .sort(compareSagas);
      return limit === undefined ? out : out.slice(0, limit);
    },
    async delete(id) {
      return sagas.delete(id);
    },
  };
}
