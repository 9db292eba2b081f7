import type { ErrorObject, ValidateFunction } from 'ajv/dist/2020.js';
import { ValidationError } from '../errors.js';

/** One schema error of a payload, compact: ajv's `instancePath`, `keyword` and `message`. */
export interface PayloadError {
  readonly instancePath: string;
  readonly keyword: string;
  readonly message: string;
}

/**
 * Why a payload failed: its schema refused it, its type or version is unknown, an upcaster threw,
 * or its type is not one registered for the topic it travels on.
 */
export type SchemaProblem = 'invalid' | 'unknown-type' | 'unknown-version' | 'upcast-failed' | 'type-not-for-topic';

/** What a schema check found wrong with a payload; the `data` of the ValidationError thrown for it. */
export interface SchemaViolation {
  readonly problem: SchemaProblem;
  readonly type: string;
  /** The version checked against (for `invalid`: the one whose schema refused the payload). */
  readonly schemaversion?: string;
  /** For `invalid`, the ajv errors (at most {@link MAX_REPORTED_ERRORS}); empty otherwise. */
  readonly errors: readonly PayloadError[];
}

/** Errors copied into a {@link SchemaViolation}; the rest are dropped. */
export const MAX_REPORTED_ERRORS = 20;

/** Runs `validate` on `data`; the violation when it refuses. */
export function violationOf(
  type: string,
  version: string,
  validate: ValidateFunction,
  data: unknown,
): SchemaViolation | undefined {
  if (validate(data)) return undefined;
  return {
    problem: 'invalid',
    type,
    schemaversion: version,
    errors: (validate.errors ?? []).slice(0, MAX_REPORTED_ERRORS).map(compactError),
  };
}

function compactError(e: ErrorObject): PayloadError {
  return { instancePath: e.instancePath, keyword: e.keyword, message: e.message ?? e.keyword };
}

/** The ValidationError for a violation; `context` is added to its message. */
export function violationError(v: SchemaViolation, context?: string): ValidationError {
  const what = `${v.type}${v.schemaversion === undefined ? '' : ` version ${v.schemaversion}`}`;
  const suffix = context ? ` ${context}` : '';
  let message: string;
  if (v.problem === 'unknown-type') message = `no schema is registered for message type ${v.type}`;
  else if (v.problem === 'upcast-failed') message = `upcasting to ${what} failed${suffix}`;
  else if (v.problem === 'unknown-version') message = `${what} is not registered`;
  else {
    const errors = v.errors.map((e) => `${e.instancePath || '/'} ${e.message}`).join('; ');
    message = `payload is not a valid ${what}${suffix}: ${errors}`;
  }
  return new ValidationError(message, { data: v });
}
