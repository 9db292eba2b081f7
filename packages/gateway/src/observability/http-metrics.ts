import type { FastifyInstance } from 'fastify';
import { Counter, Histogram, type Registry } from 'prom-client';
import { UNMATCHED_ROUTE } from './http-tracing.js';
import { type MetricsOptions, resolveMetricsOptions } from './metrics-options.js';

/**
 * `agentbus_http_requests_total{method,route,status_code}` and
 * `agentbus_http_request_duration_seconds{method,route}` for every HTTP request but the
 * WebSocket upgrade. `route` is the route template (`/v1/topics/:topic/messages`), so it stays
 * bounded; requests no route matched share `unmatched`.
 */
export function registerHttpMetrics(app: FastifyInstance, registry: Registry, options: MetricsOptions = {}): void {
  const o = resolveMetricsOptions(options);
  const requests = new Counter({
    name: 'agentbus_http_requests_total',
    help: 'HTTP requests answered, by route and status code.',
    labelNames: ['method', 'route', 'status_code'],
    registers: [registry],
  });
  const duration = new Histogram({
    name: 'agentbus_http_request_duration_seconds',
    help: 'Time from an HTTP request arriving until its response was sent.',
    labelNames: ['method', 'route'],
    buckets: [...o.httpDurationBuckets],
    registers: [registry],
  });
  app.addHook('onResponse', (request, reply, done) => {
    const route = request.routeOptions.url ?? UNMATCHED_ROUTE;
    if (route !== '/v1/ws') {
      const method = request.method;
      requests.inc({ method, route, status_code: String(reply.statusCode) });
      duration.observe({ method, route }, reply.elapsedTime / 1000);
    }
    done();
  });
}
