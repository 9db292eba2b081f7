import type { FastifyInstance } from 'fastify';
import { Registry } from 'prom-client';
import type { GatewayContext } from '../context.js';
import { BusMetrics } from './bus-metrics.js';
import { deliveryLogging } from './delivery-logging.js';
import { registerGatewayGauges } from './gateway-gauges.js';
import { registerHttpMetrics } from './http-metrics.js';
import { registerHttpTracing } from './http-tracing.js';
import { processMetricsRegistry } from './process-metrics.js';
import { registerRequestLogging } from './request-logging.js';
import { tracerProbe } from './tracer-probe.js';
import { TRACING_DEFAULTS, tracing } from './tracing.js';

/** Where Prometheus scrapes. */
export const METRICS_PATH = '/metrics';

/** What observability keeps per gateway. */
export interface GatewayObservability {
  /** This gateway's metrics (the process metrics are shared and served beside them). */
  readonly registry: Registry;
  /** The whole `/metrics` text. */
  metrics(): Promise<string>;
}

const byContext = new WeakMap<GatewayContext, GatewayObservability>();

/** The observability of the gateway with context `ctx`, once registered. */
export function observabilityOf(ctx: GatewayContext): GatewayObservability | undefined {
  return byContext.get(ctx);
}

/**
 * Metrics, tracing and logging for one gateway:
 *
 * - on the bus: `tracing()` (spans for publish and process, `traceparent` on every envelope),
 *   then the message metrics ({@link BusMetrics}), then `deliveryLogging` to the gateway's logger
 * - on HTTP: a SERVER span per `/v1` request, active around its handler; request metrics; one
 *   log record per request
 * - `GET /metrics`: Prometheus text — this gateway's own registry (message, group, circuit,
 *   connection and HTTP metrics) followed by the process metrics
 *
 * A registry per gateway: two gateways in one process (or test) never register a metric twice.
 * The bus middleware cannot be removed again (the bus has no such call), so a bus outlives its
 * gateway with them installed; they are cheap when no SDK is registered.
 */
export async function registerObservability(app: FastifyInstance, ctx: GatewayContext): Promise<void> {
  const registry = new Registry();
  const busMetrics = new BusMetrics(registry);
  ctx.bus.use(tracing({ transport: ctx.bus.transport.name }));
  ctx.bus.use(busMetrics.middleware());
  ctx.bus.use(deliveryLogging(ctx.log));
  registerGatewayGauges(registry, ctx);
  registerRequestLogging(app, ctx.log);
  registerHttpTracing(app, tracerProbe(TRACING_DEFAULTS.tracerName));
  registerHttpMetrics(app, registry);

  const observability: GatewayObservability = {
    registry,
    async metrics() {
      const [own, process] = await Promise.all([registry.metrics(), processMetricsRegistry().metrics()]);
      return `${own}\n${process}`;
    },
  };
  byContext.set(ctx, observability);

  app.get(METRICS_PATH, async (_request, reply) => {
    const text = await observability.metrics();
    return reply.header('content-type', registry.contentType).header('cache-control', 'no-store').send(text);
  });
}
