import { BusError, type WireError } from '@agentbus/core';

/** HTTP status for each error code the gateway answers with; anything else is a 500. */
export const STATUS_BY_CODE: Readonly<Record<string, number>> = Object.freeze({
  BAD_REQUEST: 400,
  INVALID_JSON: 400,
  VALIDATION: 400,
  CONFIG: 400,
  SCHEMA: 400,
  SIGNATURE: 400,
  SERIALIZATION: 400,
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  NOT_FOUND: 404,
  METHOD_NOT_ALLOWED: 405,
  NOT_ACCEPTABLE: 406,
  PAYLOAD_TOO_LARGE: 413,
  UNSUPPORTED_MEDIA_TYPE: 415,
  RATE_LIMITED: 429,
  HANDLER: 502,
  UNRECOVERABLE: 502,
  NO_RESPONDERS: 503,
  CLOSED: 503,
  CONNECTION: 503,
  CIRCUIT_OPEN: 503,
  TIMEOUT: 504,
});

/** The body of every error response: `{ "error": { code, message, retryable, data? } }`. */
export interface ErrorBody {
  readonly error: WireError;
}

/** An error the gateway raises about a request itself (not found, bad body …). */
export class HttpError extends BusError {
  override readonly code: string;
  constructor(code: string, message: string, data?: unknown) {
    super(message, data === undefined ? {} : { data });
    this.code = code;
  }
}

/** The status code for `code` (500 for codes the table does not know). */
export function statusOf(code: string): number {
  return STATUS_BY_CODE[code] ?? 500;
}

/** Fastify's own error codes, mapped onto ours. */
const FASTIFY_CODES: Readonly<Record<string, string>> = Object.freeze({
  FST_ERR_CTP_INVALID_JSON_BODY: 'INVALID_JSON',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'INVALID_JSON',
  FST_ERR_CTP_BODY_TOO_LARGE: 'PAYLOAD_TOO_LARGE',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'UNSUPPORTED_MEDIA_TYPE',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'BAD_REQUEST',
  FST_ERR_VALIDATION: 'VALIDATION',
  FST_ERR_BAD_URL: 'BAD_REQUEST',
  FST_ERR_ASYNC_CONSTRAINT: 'BAD_REQUEST',
});

/**
 * Turns anything thrown while serving a request into a wire error. BusErrors keep their code
 * and data; fastify's parser and validation errors get ours; anything else is `INTERNAL` with
 * a generic message, so that no internal detail (a stack, a connection string) leaks.
 */
export function toWireError(err: unknown): WireError {
  if (err instanceof BusError) return err.toWire();
  const e = err as { code?: unknown; statusCode?: unknown; message?: unknown; validation?: unknown } | undefined;
  if (e && typeof e.code === 'string' && e.code in FASTIFY_CODES) {
    const code = FASTIFY_CODES[e.code] as string;
    return { code, message: String(e.message ?? code), retryable: false };
  }
  if (e && typeof e.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500) {
    return { code: 'BAD_REQUEST', message: String(e.message ?? 'bad request'), retryable: false };
  }
  return { code: 'INTERNAL', message: 'internal error', retryable: true };
}
