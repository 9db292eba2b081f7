import {
  type ConsumeContext,
  type Envelope,
  HANDLED_SYNC,
  type Middleware,
  type Next,
  type PublishContext,
  withAttributes,
} from '@agentbus/core';
import {
  type Attributes,
  type Context,
  context,
  isSpanContextValid,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  type Tracer,
  trace,
} from '@opentelemetry/api';
import { MESSAGING_OPERATION, MESSAGING_SYSTEM, SPAN_ATTRIBUTES } from './messaging-attributes.js';
import { settlementOutcome } from './settlement-outcome.js';
import { formatTraceparent, parseTraceparent } from './traceparent.js';
import { tracerProbe } from './tracer-probe.js';

export interface TracingOptions {
  /** Default: the global tracer provider's tracer `@agentbus/gateway` (a no-op until an SDK registers one). */
  readonly tracer?: Tracer;
  /** The transport's name, recorded as `messaging.agentbus.transport` when given. */
  readonly transport?: string;
}

export const TRACING_DEFAULTS = Object.freeze({ tracerName: '@agentbus/gateway' });

/** The header signing puts on an envelope; a signed envelope must not change (see core's signing). */
const SIGNATURE_HEADER = 'x-agentbus-sig-value';

/** Envelopes a tracing hook already stamped, so that a second tracing middleware on a bus adds no span. */
const stamped = new WeakSet<Envelope>();
/** Deliveries a tracing hook already traces. */
const traced = new WeakSet<object>();

/**
 * OpenTelemetry tracing as bus middleware, on `@opentelemetry/api` alone.
 *
 * Publish: a PRODUCER span `<topic> publish`, child of the active span — or, when none is
 * active, of the envelope's own `traceparent` — and the envelope is replaced by one whose
 * `traceparent` is that span's (the bus also copies it into the transport's native headers).
 * The span ends when the rest of the publish settles, with the error if it failed.
 *
 * Consume: a CONSUMER span `<topic> process` whose parent is the envelope's `traceparent` (a
 * new trace without one), made active around the rest of the chain and the handler, so that
 * what the handler publishes (a reply) is its child. It ends with the handler's outcome and the
 * settlement the bus will make (`messaging.agentbus.settlement`).
 *
 * Attributes follow the messaging semantic conventions. Add it before middleware that must see
 * the final envelope (signing): an envelope that is already signed keeps its `traceparent`.
 * Adding it twice to a bus is harmless. Until an SDK registers a tracer provider (the API's
 * no-op tracer) the hooks only call `next()`: no parsing, no envelope copy, no propagation.
 */
export function tracing(options: TracingOptions = {}): Middleware {
  const { tracer, enabled } = tracerProbe(TRACING_DEFAULTS.tracerName, options.tracer);
  const transport = options.transport;

  const publish = (ctx: PublishContext, next: Next): Promise<void> => {
    const env = ctx.envelope;
    if (!enabled() || stamped.has(env)) return next();
    let parent = context.active();
    if (trace.getSpan(parent) === undefined && env.traceparent !== undefined) {
      const sc = parseTraceparent(env.traceparent);
      if (sc !== undefined) parent = trace.setSpanContext(parent, sc);
    }
    const span = tracer.startSpan(
      `${env.topic} publish`,
      { kind: SpanKind.PRODUCER, attributes: publishAttributes(env, transport) },
      parent,
    );
    const sc = span.spanContext();
    if (isSpanContextValid(sc) && env.headers?.[SIGNATURE_HEADER] === undefined) {
      const traceparent = formatTraceparent(sc);
      if (traceparent !== env.traceparent) {
        ctx.envelope = withAttributes(env, { traceparent });
        stamped.add(ctx.envelope);
      }
    }
    if (!span.isRecording()) return next();
    return context.with(trace.setSpan(parent, span), next).then(
      () => span.end(),
      (err: unknown) => {
        failSpan(span, err);
        span.end();
        throw err;
      },
    );
  };

  const consume = (ctx: ConsumeContext, next: Next): Promise<void> => {
    const { delivery } = ctx;
    if (!enabled() || traced.has(delivery)) return next();
    const env = ctx.envelope;
    const remote = parseTraceparent(env.traceparent);
    const parent: Context = remote === undefined ? ROOT_CONTEXT : trace.setSpanContext(ROOT_CONTEXT, remote);
    const span = tracer.startSpan(
      `${env.topic} process`,
      { kind: SpanKind.CONSUMER, attributes: consumeAttributes(ctx, transport) },
      parent,
    );
    if (!span.isRecording()) return context.with(trace.setSpan(parent, span), next);
    traced.add(delivery);
    const done = context.with(trace.setSpan(parent, span), next);
    if (done === HANDLED_SYNC) {
      endConsume(span, ctx, false, undefined);
      return done;
    }
    return done.then(
      () => endConsume(span, ctx, false, undefined),
      (err: unknown) => {
        endConsume(span, ctx, true, err);
        throw err;
      },
    );
  };

  return { name: 'tracing', publish, consume };
}

function publishAttributes(env: Envelope, transport: string | undefined): Attributes {
  const a: Attributes = {
    [SPAN_ATTRIBUTES.messagingSystem]: MESSAGING_SYSTEM,
    [SPAN_ATTRIBUTES.operationType]: MESSAGING_OPERATION.send,
    [SPAN_ATTRIBUTES.operationName]: 'publish',
    [SPAN_ATTRIBUTES.destinationName]: env.topic,
    [SPAN_ATTRIBUTES.messageId]: env.id,
  };
  if (env.correlationid !== undefined) a[SPAN_ATTRIBUTES.conversationId] = env.correlationid;
  if (transport !== undefined) a[SPAN_ATTRIBUTES.transport] = transport;
  return a;
}

function consumeAttributes(ctx: ConsumeContext, transport: string | undefined): Attributes {
  const env = ctx.envelope;
  const a: Attributes = {
    [SPAN_ATTRIBUTES.messagingSystem]: MESSAGING_SYSTEM,
    [SPAN_ATTRIBUTES.operationType]: MESSAGING_OPERATION.process,
    [SPAN_ATTRIBUTES.operationName]: 'process',
    [SPAN_ATTRIBUTES.destinationName]: env.topic,
    [SPAN_ATTRIBUTES.subscriptionName]: ctx.pattern,
    [SPAN_ATTRIBUTES.consumerGroup]: ctx.group,
    [SPAN_ATTRIBUTES.messageId]: env.id,
    [SPAN_ATTRIBUTES.attempt]: ctx.delivery.attempt,
  };
  if (env.correlationid !== undefined) a[SPAN_ATTRIBUTES.conversationId] = env.correlationid;
  if (transport !== undefined) a[SPAN_ATTRIBUTES.transport] = transport;
  return a;
}

function endConsume(span: Span, ctx: ConsumeContext, failed: boolean, err: unknown): void {
  const outcome = settlementOutcome(ctx, failed, err);
  span.setAttribute(SPAN_ATTRIBUTES.settlement, outcome.settlement);
  if (outcome.reason !== undefined) span.setAttribute(SPAN_ATTRIBUTES.deadLetterReason, outcome.reason);
  if (failed) failSpan(span, err);
  span.end();
}

/** Records `err` on `span` and marks it failed (`error.type`: the BusError code or the error's name). */
export function failSpan(span: Span, err: unknown): void {
  const e = err instanceof Error ? err : new Error(String(err));
  span.recordException(e);
  span.setStatus({ code: SpanStatusCode.ERROR, message: e.message });
  const code = (err as { code?: unknown } | undefined)?.code;
  span.setAttribute(SPAN_ATTRIBUTES.errorType, typeof code === 'string' ? code : e.name);
}
