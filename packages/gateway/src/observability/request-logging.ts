import { isSpanContextValid } from '@opentelemetry/api';
import type { FastifyBaseLogger, FastifyInstance } from 'fastify';
import { levels } from 'pino';
import { isApiRequest, serverSpanOf, targetPath, UNMATCHED_ROUTE } from './http-tracing.js';

/**
 * One log record per answered `/v1` HTTP request (fastify's own request logging is off): `debug`
 * below 400, `info` for 4xx, `warn` for 5xx (the error handler logs the error itself), with
 * `method`, `route`, `path`, `statusCode`, `durationMs` and the server span's `traceId` and
 * `spanId`. Register it before the tracing hooks, so that it runs while the span is still open.
 */
export function registerRequestLogging(app: FastifyInstance, log: FastifyBaseLogger): void {
  app.addHook('onResponse', (request, reply, done) => {
    if (!isApiRequest(request)) {
      done();
      return;
    }
    const status = reply.statusCode;
    const level = status >= 500 ? 'warn' : status >= 400 ? 'info' : 'debug';
    if ((levels.values[level] ?? 0) >= (levels.values[log.level] ?? Number.POSITIVE_INFINITY)) {
      const sc = serverSpanOf(request)?.spanContext();
      log[level](
        {
          method: request.method,
          route: request.routeOptions.url ?? UNMATCHED_ROUTE,
          path: targetPath(request),
          statusCode: status,
          durationMs: Math.round(reply.elapsedTime * 1000) / 1000,
          ...(sc !== undefined && isSpanContextValid(sc) ? { traceId: sc.traceId, spanId: sc.spanId } : {}),
        },
        'request completed',
      );
    }
    done();
  });
}
