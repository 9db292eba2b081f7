/**
 * The error hierarchy of agentbus (DESIGN §5). Code branches on `code`, never on message text.
 * Errors that cross the wire travel as {@link WireError} and are rebuilt with {@link errorFromWire}.
 */

/** The JSON shape of an error that crosses a process boundary. */
export interface WireError {
  readonly code: string;
  readonly message: string;
  readonly retryable: boolean;
  readonly data?: unknown;
}

export interface BusErrorOptions {
  readonly cause?: unknown;
  readonly data?: unknown;
}

/** Base class of every error agentbus raises on purpose. */
export class BusError extends Error {
  /** Stable machine-readable code, e.g. `CONFIG`, `CLOSED`. */
  readonly code: string = 'BUS_ERROR';
  /** Whether the same operation may succeed if tried again. */
  readonly retryable: boolean = false;
  /** Extra machine-readable details (never secrets). */
  readonly data: unknown;

  constructor(message: string, options: BusErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.data = options.data;
  }

  toWire(): WireError {
    return {
      code: this.code,
      message: this.message,
      retryable: this.retryable,
      ...(this.data === undefined ? {} : { data: this.data }),
    };
  }
}

/** Invalid options; `data.path` names the offending field. */
export class ConfigError extends BusError {
  override readonly code = 'CONFIG';
  /** Dotted path of the offending option, e.g. `subscribe.concurrency`. */
  readonly path: string | undefined;
  constructor(message: string, options: BusErrorOptions & { path?: string } = {}) {
    super(options.path ? `${options.path}: ${message}` : message, {
      ...options,
      data: options.data ?? (options.path ? { path: options.path } : undefined),
    });
    this.path = options.path;
  }
}
export class ConnectionError extends BusError {
  override readonly code = 'CONNECTION';
  override readonly retryable = true;
}
export class ClosedError extends BusError {
  override readonly code = 'CLOSED';
}
export class TimeoutError extends BusError {
  override readonly code = 'TIMEOUT';
  override readonly retryable = true;
}
export class NoRespondersError extends BusError {
  override readonly code = 'NO_RESPONDERS';
  override readonly retryable = true;
}
export class ValidationError extends BusError {
  override readonly code = 'VALIDATION';
}
export class SignatureError extends BusError {
  override readonly code = 'SIGNATURE';
}
export class UnauthorizedError extends BusError {
  override readonly code = 'UNAUTHORIZED';
}
export class ForbiddenError extends BusError {
  override readonly code = 'FORBIDDEN';
}
/**
 * A rate limit refused the operation; trying again after `retryAfterMs` may succeed. The wait is
 * also in `data.retryAfterMs`, so it survives the wire ({@link errorFromWire} restores the property).
 */
export class RateLimitedError extends BusError {
  override readonly code = 'RATE_LIMITED';
  override readonly retryable = true;
  /** How long to wait before trying again (ms), when the limiter knows. */
  readonly retryAfterMs: number | undefined;
  constructor(message: string, options: BusErrorOptions & { retryAfterMs?: number } = {}) {
    const data = options.data as { retryAfterMs?: unknown } | undefined;
    const retryAfterMs =
      options.retryAfterMs ?? (typeof data?.retryAfterMs === 'number' ? data.retryAfterMs : undefined);
    super(message, {
      ...options,
      data:
        retryAfterMs === undefined
          ? options.data
          : { ...(typeof options.data === 'object' && options.data !== null ? options.data : {}), retryAfterMs },
    });
    this.retryAfterMs = retryAfterMs;
  }
}
export class SerializationError extends BusError {
  override readonly code = 'SERIALIZATION';
}
export class PayloadTooLargeError extends BusError {
  override readonly code = 'PAYLOAD_TOO_LARGE';
}
/** A circuit breaker is open: calls are refused until it lets a trial through (`data.retryAfterMs`). */
export class CircuitOpenError extends BusError {
  override readonly code = 'CIRCUIT_OPEN';
  override readonly retryable = true;
}
/** What a {@link ConcurrencyError} carries in `data` (and so across the wire). */
export interface ConcurrencyErrorData {
  readonly streamId: string;
  /** The expectation the append was made with: a version, `'no-stream'` or `'any'`. */
  readonly expectedVersion: number | string;
  /** The stream's version when the append was refused (0: no events). */
  readonly actualVersion: number;
}

/**
 * An event-store append found the stream at another version than it expected (optimistic
 * concurrency): nothing was appended. Not retryable as it is — read the stream again, decide
 * again, append with the new version. Details in `data` ({@link ConcurrencyErrorData}).
 */
export class ConcurrencyError extends BusError {
  override readonly code = 'CONCURRENCY';
  declare readonly data: ConcurrencyErrorData | undefined;
  get streamId(): string | undefined {
    return this.data?.streamId;
  }
  get expectedVersion(): number | string | undefined {
    return this.data?.expectedVersion;
  }
  get actualVersion(): number | undefined {
    return this.data?.actualVersion;
  }
}
/** A handler failed in a way that may succeed on a later attempt. */
export class HandlerError extends BusError {
  override readonly code = 'HANDLER';
  override readonly retryable = true;
}
/** Thrown by a handler to dead-letter its message at once, without retries. */
export class UnrecoverableError extends BusError {
  override readonly code = 'UNRECOVERABLE';
}

type BusErrorClass = new (message: string, options?: BusErrorOptions) => BusError;

const byCode = new Map<string, BusErrorClass>(
  (
    [
      ConfigError,
      ConnectionError,
      ClosedError,
      TimeoutError,
      NoRespondersError,
      ValidationError,
      SignatureError,
      UnauthorizedError,
      ForbiddenError,
      RateLimitedError,
      CircuitOpenError,
      ConcurrencyError,
      SerializationError,
      PayloadTooLargeError,
      HandlerError,
      UnrecoverableError,
    ] as BusErrorClass[]
  ).map((cls) => [new cls('').code, cls]),
);

/** Rebuilds an error that crossed the wire as the same class (BusError for unknown codes). */
export function errorFromWire(wire: WireError): BusError {
  const cls = byCode.get(wire.code);
  if (cls) return new cls(wire.message, { data: wire.data });
  const err = new BusError(wire.message, { data: wire.data });
  Object.defineProperties(err, {
    code: { value: wire.code },
    retryable: { value: wire.retryable },
  });
  return err;
}

/** Whether an error may succeed on retry: BusErrors say so themselves, anything else is retryable. */
export function isRetryable(err: unknown): boolean {
  return err instanceof BusError ? err.retryable : true;
}

/** A short, single-line description of any thrown value, for dead-letter records and logs. */
export function describeError(err: unknown): string {
  if (err instanceof BusError) return `${err.code}: ${err.message}`;
  if (err instanceof Error) return `${err.name}: ${err.message}`;
  return String(err);
}
