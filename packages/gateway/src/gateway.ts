import { AgentDirectory } from '@agentbus/core';
import Fastify, { type FastifyBaseLogger, type FastifyInstance, LogController } from 'fastify';
import { pino } from 'pino';
import { Activity } from './activity.js';
import { bearerToken, GatewayAuth, notAuthenticated } from './auth.js';
import { type GatewayContext, NO_CONNECTIONS } from './context.js';
import { registerDashboard } from './dashboard/dashboard.js';
import { type GatewayOptions, type ResolvedGatewayOptions, resolveGatewayOptions } from './gateway-options.js';
import { HttpError, statusOf, toWireError } from './http-errors.js';
import { isApiRequest } from './observability/http-tracing.js';
import { registerObservability } from './observability/observability.js';
import { registerDeadLetterRoutes } from './routes/dead-letters.js';
import { registerHealthRoutes } from './routes/health.js';
import { registerMessageRoutes } from './routes/messages.js';
import { registerOpenApi } from './routes/openapi.js';
import { registerSystemRoutes } from './routes/system.js';
import { registerWebSocket } from './ws/websocket.js';

/** A running (or ready to run) gateway. */
export interface Gateway extends AsyncDisposable {
  /** The fastify instance (for `inject` in tests and for adding routes). */
  readonly app: FastifyInstance;
  readonly context: GatewayContext;
  readonly options: ResolvedGatewayOptions;
  /** Starts listening; resolves with the base URL, e.g. `http://127.0.0.1:8080`. */
  listen(options?: { host?: string; port?: number }): Promise<string>;
  /** The base URL once listening. */
  readonly url: string | undefined;
  /**
   * Graceful shutdown: stops accepting connections, tells WebSocket clients (1001) and lets
   * in-flight requests and handlers finish (at most `drainTimeoutMs`), then closes. Idempotent.
   */
  close(): Promise<void>;
}

/**
 * Builds the gateway: the HTTP API under `/v1`, the WebSocket protocol at `/v1/ws`, health,
 * metrics, the OpenAPI document and the dashboard, over one bus.
 */
export async function createGateway(options: GatewayOptions): Promise<Gateway> {
  const resolved = resolveGatewayOptions(options);
  const { bus } = options;
  const logger =
    options.logger === false
      ? pino({ level: 'silent' })
      : (options.logger ?? pino({ level: 'info' }, pino.destination(2)));
  const app = Fastify({
    loggerInstance: logger as FastifyBaseLogger,
    bodyLimit: resolved.maxBodyBytes,
    logController: new LogController({ disableRequestLogging: true }),
    // Agents reconnect on their own; a dead peer must not hold a socket for the OS default.
    connectionTimeout: 0,
    keepAliveTimeout: 10_000,
    return503OnClosing: true,
    forceCloseConnections: 'idle',
  });
  const closing = new AbortController();
  const activity = new Activity(() => bus.clock.now());
  const agents = new AgentDirectory(bus);
  const auth = new GatewayAuth(options.auth);
  if (!auth.enabled) app.log.warn('gateway auth is off: anyone who reaches this port may publish and subscribe');
  const ctx: GatewayContext = {
    bus,
    auth,
    options: resolved,
    log: app.log,
    activity,
    agents,
    sagas: options.sagas,
    connections: NO_CONNECTIONS,
    closing: closing.signal,
    startedAtMs: Date.now(),
  };
  for (const g of resolved.groups) activity.watch(g);
  bus.use(activity.middleware());

  app.decorateRequest('caller', undefined as never);
  // First, so that its onRequest hooks (server span, timing) see every request, a refused one too.
  await registerObservability(app, ctx);
  // The API speaks JSON only: a text body is refused with 415 rather than parsed as a string.
  app.removeContentTypeParser('text/plain');
  app.setErrorHandler((err, request, reply) => {
    const wire = toWireError(err);
    const status = statusOf(wire.code);
    if (status >= 500 && wire.code === 'INTERNAL') request.log.error({ err }, 'request failed');
    if (wire.code === 'RATE_LIMITED') {
      const retry = (wire.data as { retryAfterMs?: number } | undefined)?.retryAfterMs;
      if (retry !== undefined) reply.header('retry-after', Math.ceil(retry / 1000));
    }
    if (status === 401) reply.header('www-authenticate', 'Bearer');
    return reply.code(status).send({ error: wire });
  });
  app.setNotFoundHandler((request, reply) => {
    const wire = new HttpError('NOT_FOUND', `no route ${request.method} ${request.url.split('?')[0]}`).toWire();
    return reply.code(404).send({ error: wire });
  });
  // While draining, tell keep-alive clients to go: an idle kept-alive socket would hold close up.
  app.addHook('onSend', async (_request, reply) => {
    if (closing.signal.aborted) reply.header('connection', 'close');
  });
  // Every /v1 HTTP route needs a caller; the WebSocket route authenticates in its own way.
  app.addHook('onRequest', async (request) => {
    if (!isApiRequest(request)) return;
    request.caller = await auth.authenticate(bearerToken(request.headers.authorization));
  });
  // And again right before the handler, failing closed: no /v1 route runs without a caller.
  app.addHook('preHandler', async (request) => {
    if (request.caller === undefined && isApiRequest(request)) throw notAuthenticated();
  });

  await registerHealthRoutes(app, ctx);
  await registerMessageRoutes(app, ctx);
  await registerDeadLetterRoutes(app, ctx);
  await registerSystemRoutes(app, ctx);
  await registerWebSocket(app, ctx);
  await registerOpenApi(app, ctx);
  if (resolved.dashboard) await registerDashboard(app, ctx);
  await agents.start();

  let url: string | undefined;
  let closingPromise: Promise<void> | undefined;
  const gateway: Gateway = {
    app,
    context: ctx,
    options: resolved,
    get url() {
      return url;
    },
    async listen(opts = {}) {
      const address = await app.listen({ host: opts.host ?? '127.0.0.1', port: opts.port ?? 0 });
      url = address.replace('://[::1]', '://localhost').replace('://0.0.0.0', '://127.0.0.1');
      return url;
    },
    close() {
      closingPromise ??= (async () => {
        closing.abort(new Error('gateway closing'));
        const drain = ctx.connections.closeAll('server shutting down');
        const timer = setTimeout(() => app.server.closeAllConnections?.(), resolved.drainTimeoutMs);
        try {
          await Promise.all([drain, app.close()]);
        } finally {
          clearTimeout(timer);
        }
        await agents.close();
        if (resolved.ownsBus) await bus.close();
      })();
      return closingPromise;
    },
    [Symbol.asyncDispose]() {
      return gateway.close();
    },
  };
  return gateway;
}
