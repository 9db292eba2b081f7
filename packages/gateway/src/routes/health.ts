import type { HealthStatus } from '@agentbus/core';
import type { FastifyInstance } from 'fastify';
import type { GatewayContext } from '../context.js';

/** A round trip slower than this turns its check to `warn`. */
export const HEALTH_WARN_LATENCY_MS = 1_000;
/** A check that takes longer than this fails. */
export const HEALTH_CHECK_TIMEOUT_MS = 5_000;

/** One entry of `checks` (draft-inadarei-api-health-check). */
export interface HealthCheck {
  readonly componentId?: string;
  readonly componentType: string;
  readonly status: HealthStatus;
  readonly observedValue?: number | string;
  readonly observedUnit?: string;
  readonly time: string;
  readonly output?: string;
}

export interface HealthDocument {
  readonly status: HealthStatus;
  readonly description: string;
  readonly serviceId: string;
  readonly checks?: Readonly<Record<string, readonly HealthCheck[]>>;
}

const RANK: Record<HealthStatus, number> = { pass: 0, warn: 1, fail: 2 };

/** The worse of two statuses: one failing component fails the whole, a warning warns it. */
export function worst(a: HealthStatus, b: HealthStatus): HealthStatus {
  return RANK[b] > RANK[a] ? b : a;
}

async function timed<T>(fn: () => Promise<T>): Promise<{ value?: T; error?: string; ms: number }> {
  const start = performance.now();
  let timer: NodeJS.Timeout | undefined;
  try {
    const value = await Promise.race([
      fn(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`no answer within ${HEALTH_CHECK_TIMEOUT_MS} ms`)),
          HEALTH_CHECK_TIMEOUT_MS,
        );
      }),
    ]);
    return { value, ms: performance.now() - start };
  } catch (err) {
    return { error: (err as Error).message ?? String(err), ms: performance.now() - start };
  } finally {
    clearTimeout(timer);
  }
}

function latencyStatus(ms: number): HealthStatus {
  return ms > HEALTH_WARN_LATENCY_MS ? 'warn' : 'pass';
}

/** The deep health document: every component checked, the status cascading from the worst. */
export async function deepHealth(ctx: GatewayContext): Promise<HealthDocument> {
  const { bus } = ctx;
  const time = new Date().toISOString();
  const transportName = bus.transport.name;
  const [transport, store] = await Promise.all([
    timed(() => bus.transport.health(true)),
    timed(() => bus.transport.deadLetters.list({ limit: 1 })),
  ]);
  const report = transport.value;
  const transportStatus: HealthStatus = transport.error
    ? 'fail'
    : worst(report?.status ?? 'fail', latencyStatus(report?.latencyMs ?? transport.ms));
  const checks: Record<string, HealthCheck[]> = {
    'transport:roundtrip': [
      {
        componentId: transportName,
        componentType: 'datastore',
        status: transportStatus,
        observedValue: Math.round((report?.latencyMs ?? transport.ms) * 100) / 100,
        observedUnit: 'ms',
        time,
        ...(transport.error || report?.error ? { output: transport.error ?? report?.error } : {}),
      },
    ],
    'deadLetters:list': [
      {
        componentId: `${transportName}.dead-letters`,
        componentType: 'datastore',
        status: store.error ? 'fail' : latencyStatus(store.ms),
        observedValue: Math.round(store.ms * 100) / 100,
        observedUnit: 'ms',
        time,
        ...(store.error ? { output: store.error } : {}),
      },
    ],
    'subscriptions:open': [
      {
        componentId: 'bus',
        componentType: 'component',
        status: bus.closed ? 'fail' : 'pass',
        observedValue: ctx.connections.list().reduce((n, c) => n + c.subscriptions.length, 0),
        observedUnit: 'client subscriptions',
        time,
        ...(bus.closed ? { output: 'the bus is closed' } : {}),
      },
    ],
    'gateway:connections': [
      {
        componentId: 'websocket',
        componentType: 'component',
        status: ctx.closing.aborted ? 'warn' : 'pass',
        observedValue: ctx.connections.size,
        observedUnit: 'connections',
        time,
        ...(ctx.closing.aborted ? { output: 'shutting down' } : {}),
      },
    ],
  };
  let status: HealthStatus = 'pass';
  for (const list of Object.values(checks)) for (const c of list) status = worst(status, c.status);
  return { status, description: 'agentbus gateway', serviceId: transportName, checks };
}

/**
 * `GET /health`: the surface check (the process answers, the bus is open), no backend round trip;
 * `GET /health?deep=1`: {@link deepHealth}. Both `application/health+json`; 503 when the status is
 * `fail`. Unauthenticated, so that load balancers and orchestrators can call it.
 */
export async function registerHealthRoutes(app: FastifyInstance, ctx: GatewayContext): Promise<void> {
  app.get<{ Querystring: { deep?: string } }>('/health', async (request, reply) => {
    const deep = request.query.deep;
    const doc: HealthDocument =
      deep === '1' || deep === 'true'
        ? await deepHealth(ctx)
        : {
            status: ctx.bus.closed ? 'fail' : ctx.closing.aborted ? 'warn' : 'pass',
            description: 'agentbus gateway',
            serviceId: ctx.bus.transport.name,
          };
    return reply
      .code(doc.status === 'fail' ? 503 : 200)
      .header('content-type', 'application/health+json; charset=utf-8')
      .header('cache-control', 'no-store')
      .send(JSON.stringify(doc));
  });
}
