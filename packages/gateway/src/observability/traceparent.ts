import { INVALID_SPANID, INVALID_TRACEID, type SpanContext } from '@opentelemetry/api';

/**
 * `version-traceid-parentid-flags`, lower-case hex. Versions other than `00` may carry more
 * fields after the flags (W3C Trace Context, "future versions"); `ff` is never valid.
 */
const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/s;

/**
 * Parses a W3C `traceparent` (https://www.w3.org/TR/trace-context/#traceparent-header) into a
 * remote span context; undefined when it is malformed, of version `ff`, of version `00` with
 * extra fields, or has an all-zero trace or span id.
 */
export function parseTraceparent(value: string | undefined): SpanContext | undefined {
  if (value === undefined || value.length < 55 || value.length > 512) return undefined;
  const m = TRACEPARENT.exec(value);
  if (m === null) return undefined;
  const [, version, traceId, spanId, flags, rest] = m as unknown as [string, string, string, string, string, string?];
  if (version === 'ff' || (version === '00' && rest !== undefined)) return undefined;
  if (traceId === INVALID_TRACEID || spanId === INVALID_SPANID) return undefined;
  return { traceId, spanId, traceFlags: Number.parseInt(flags, 16), isRemote: true };
}

/** Formats a span context as a version-00 W3C `traceparent`. */
export function formatTraceparent(sc: SpanContext): string {
  return `00-${sc.traceId}-${sc.spanId}-${(sc.traceFlags & 0xff).toString(16).padStart(2, '0')}`;
}
