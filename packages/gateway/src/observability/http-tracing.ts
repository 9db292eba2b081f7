import { context, ROOT_CONTEXT, type Span, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { SPAN_ATTRIBUTES } from './messaging-attributes.js';
import { parseTraceparent } from './traceparent.js';
import type { TracerProbe } from './tracer-probe.js';

/** The route label of a request no route matched. */
export const UNMATCHED_ROUTE = 'unmatched';

/** The server span of each traced request (a WeakMap: a request that never answers leaks nothing). */
const serverSpans = new WeakMap<FastifyRequest, Span>();

/** The SERVER span of `request`, if it is traced. */
export function serverSpanOf(request: FastifyRequest): Span | undefined {
  return serverSpans.get(request);
}

/**
 * The path a request is for: the matched route's template, else the pathname of its target. Never
 * `request.url` as such: a request line may carry an absolute URL (`GET http://host/v1/… HTTP/1.1`),
 * which fastify routes by its path.
 */
export function requestPath(request: FastifyRequest): string {
  return request.routeOptions.url ?? targetPath(request);
}

/** The pathname of a request's target, also when the request line carries an absolute URL. */
export function targetPath(request: FastifyRequest): string {
  try {
    return new URL(request.url, 'http://gateway.invalid').pathname;
  } catch {
    return request.url.split('?', 1)[0] as string;
  }
}

/** Whether a request is for the `/v1` HTTP API (which needs a caller), not the WebSocket (a long-lived connection). */
export function isApiRequest(request: FastifyRequest): boolean {
  const path = requestPath(request);
  return path.startsWith('/v1/') && path !== '/v1/ws';
}

/**
 * A SERVER span `<METHOD> <route>` for every `/v1` HTTP request: child of the incoming
 * `traceparent` header, or a new trace. It is made active (`context.with`) around the rest of
 * fastify's lifecycle, so the route handler — and the bus publish it makes — run inside it;
 * it ends when the response is sent (`http.response.status_code`, error status from 500), or
 * when the client goes away first.
 */
export function registerHttpTracing(app: FastifyInstance, probe: TracerProbe): void {
  const { tracer, enabled } = probe;
  app.addHook('onRequest', (request, _reply, done) => {
    if (!enabled() || !isApiRequest(request)) {
      done();
      return;
    }
    const header = request.headers.traceparent;
    const remote = typeof header === 'string' ? parseTraceparent(header) : undefined;
    const parent = remote === undefined ? ROOT_CONTEXT : trace.setSpanContext(ROOT_CONTEXT, remote);
    const route = request.routeOptions.url ?? UNMATCHED_ROUTE;
    const span = tracer.startSpan(
      `${request.method} ${route}`,
      {
        kind: SpanKind.SERVER,
        attributes: {
          [SPAN_ATTRIBUTES.httpMethod]: request.method,
          [SPAN_ATTRIBUTES.httpRoute]: route,
          [SPAN_ATTRIBUTES.urlPath]: targetPath(request),
          [SPAN_ATTRIBUTES.urlScheme]: request.protocol,
          [SPAN_ATTRIBUTES.clientAddress]: request.ip,
          ...(typeof request.headers['user-agent'] === 'string'
            ? { [SPAN_ATTRIBUTES.userAgent]: request.headers['user-agent'] }
            : {}),
        },
      },
      parent,
    );
    serverSpans.set(request, span);
    context.with(trace.setSpan(parent, span), done);
  });

  app.addHook('onResponse', (request, reply, done) => {
    const span = serverSpans.get(request);
    if (span !== undefined) {
      serverSpans.delete(request);
      span.setAttribute(SPAN_ATTRIBUTES.httpStatus, reply.statusCode);
      if (reply.statusCode >= 500) span.setStatus({ code: SpanStatusCode.ERROR });
      span.end();
    }
    done();
  });

  app.addHook('onRequestAbort', (request, done) => {
    const span = serverSpans.get(request);
    if (span !== undefined) {
      serverSpans.delete(request);
      span.setStatus({ code: SpanStatusCode.ERROR, message: 'client went away' });
      span.setAttribute(SPAN_ATTRIBUTES.errorType, 'aborted');
      span.end();
    }
    done();
  });
}
