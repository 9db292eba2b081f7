import { BusError, SerializationError, type WireError } from './errors.js';
import type { SagaDefinition } from './saga.js';
import type { SagaState, SagaStepState } from './saga-repository.js';

/**
 * Helpers of the saga orchestrator: JSON normalisation, errors as persisted, and state updates.
 * Not exported from the package.
 */

/** A JSON copy of `value`: what a durable repository will give back. SerializationError if it is not JSON. */
export function toJson<T>(value: T, what: string): T {
  if (value === undefined) return value;
  let text: string;
  try {
    text = JSON.stringify(value);
  } catch (err) {
    throw new SerializationError(`${what} is not JSON: ${(err as Error).message}`, { cause: err });
  }
  return (text === undefined ? undefined : JSON.parse(text)) as T;
}

/** An error as a saga stores and publishes it (the shape errors cross the wire in). */
export function errorToWire(err: unknown): WireError {
  if (err instanceof BusError) {
    const wire = err.toWire();
    try {
      return toJson(wire, 'error data');
    } catch {
      return { code: wire.code, message: wire.message, retryable: wire.retryable };
    }
  }
  if (err instanceof Error) return { code: 'ERROR', message: `${err.name}: ${err.message}`, retryable: true };
  return { code: 'ERROR', message: String(err), retryable: true };
}

/** Whether an error (as thrown) says the work may have happened anyway: a timeout. */
export function isTimeout(err: unknown): boolean {
  return err instanceof BusError && err.code === 'TIMEOUT';
}

/** The fresh state of a step. */
export function pendingStep(name: string): SagaStepState {
  return {
    name,
    status: 'pending',
    attempts: 0,
    failures: 0,
    compensationAttempts: 0,
    compensationFailures: 0,
    interruptions: 0,
  };
}

/** `s` with step `i` changed by `patch` (undefined values delete the field) and the saga by `saga`. */
export function withStep(
  s: SagaState,
  i: number,
  patch: Partial<{ -readonly [K in keyof SagaStepState]: SagaStepState[K] | undefined }>,
  saga: Partial<Pick<SagaState, 'status' | 'error' | 'payload'>> = {},
): SagaState {
  const steps = s.steps.map((st, k) => (k === i ? dropUndefined({ ...st, ...patch }) : st));
  return { ...s, ...saga, steps };
}

/** A copy of `o` without its undefined fields. */
export function dropUndefined<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}

/** Whether a persisted saga was made by this definition (same steps in the same order). */
export function matchesDefinition(s: SagaState, def: SagaDefinition<object>): boolean {
  return s.steps.length === def.steps.length && s.steps.every((st, i) => st.name === def.steps[i]?.name);
}

/** `s` claimed by `owner` until `leaseUntilMs`, or released (no owner) when `owner` is undefined. */
export function withOwner(s: SagaState, owner: string | undefined, leaseUntilMs: number | undefined): SagaState {
  const { owner: _o, leaseUntilMs: _l, ...rest } = s;
  return owner === undefined ? rest : { ...rest, owner, leaseUntilMs };
}

/** A timer that can be cut short; `wake()` resolves it at once. */
export function delay(ms: number): { promise: Promise<void>; wake: () => void } {
  let wake!: () => void;
  let timer: NodeJS.Timeout | undefined;
  const promise = new Promise<void>((resolve) => {
    wake = () => {
      clearTimeout(timer);
      resolve();
    };
    timer = setTimeout(resolve, ms);
  });
  return { promise, wake };
}
