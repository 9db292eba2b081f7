import type { Logger } from '@agentbus/core';
import { isSpanContextValid, trace } from '@opentelemetry/api';
import type { Logger as PinoLogger } from 'pino';
import { parseTraceparent } from './traceparent.js';

/** Trace correlation fields of a log record. */
export interface TraceFields {
  readonly traceId?: string;
  readonly spanId?: string;
}

const NONE: TraceFields = Object.freeze({});

/**
 * `traceId` and `spanId` of the active span, or else of `traceparent` (an envelope's); empty
 * when neither is valid.
 */
export function traceFields(traceparent?: string): TraceFields {
  const sc = trace.getActiveSpan()?.spanContext();
  if (sc !== undefined && isSpanContextValid(sc)) return { traceId: sc.traceId, spanId: sc.spanId };
  const remote = parseTraceparent(traceparent);
  return remote === undefined ? NONE : { traceId: remote.traceId, spanId: remote.spanId };
}

/**
 * A pino `mixin` that adds the active span's `traceId` and `spanId` to every record:
 * `pino({ mixin: traceMixin })`.
 */
export function traceMixin(): object {
  // A fresh object: pino merges the record into what the mixin returns.
  const fields = traceFields();
  return fields === NONE ? {} : fields;
}

/**
 * Adapts a pino logger to core's `Logger`, so that the bus's own records (lease extension
 * failed, undecodable message dead-lettered, settle failed …) are JSON lines with the rest of
 * the process's logs, each with the active span's `traceId`/`spanId` when there is one. `err`
 * goes through pino's error serializer (type, message, stack, code).
 *
 * `createBus({ transport, logger: pinoBusLogger(log.child({ component: 'bus' })) })`
 */
export function pinoBusLogger(pino: PinoLogger): Logger {
  const write =
    (level: 'debug' | 'info' | 'warn' | 'error') =>
    (obj: object, msg?: string): void => {
      if (!pino.isLevelEnabled(level)) return;
      const fields = traceFields();
      const record = fields === NONE ? obj : { ...fields, ...obj };
      if (msg === undefined) pino[level](record);
      else pino[level](record, msg);
    };
  return Object.freeze({ debug: write('debug'), info: write('info'), warn: write('warn'), error: write('error') });
}
