import { SAGA_UNFINISHED_STATUSES, type SagaStatus, ValidationError } from '@agentbus/core';
import type { FastifyInstance } from 'fastify';
import type { GatewayContext } from '../context.js';
import { scopedGroupPrefix } from '../ws/ws-operations.js';

/** Groups whose backlog one stats call asks the transport for at most. */
export const MAX_GROUP_STATS = 200;

/**
 * `GET /v1/agents` (the agent directory), `GET /v1/connections` (WebSocket clients),
 * `GET /v1/stats` (topics, groups with backlog, throughput history) and `GET /v1/sagas`.
 * Agents and stats need an authenticated caller; connections and sagas are operator views and
 * need `dlq-admin` on `>`. Stats show an operator (`dlq-admin` on `>`) everything; another
 * caller sees the topics it may publish or subscribe to and the groups it owns (its scoped
 * WebSocket groups) — `scope: "caller"`, without the gateway-wide connection count and
 * throughput history — so stats do not tell one agent who else is connected or how busy they are.
 */
export async function registerSystemRoutes(app: FastifyInstance, ctx: GatewayContext): Promise<void> {
  const { bus, auth, activity } = ctx;

  app.get('/v1/agents', async () => ({ items: await ctx.agents.list() }));

  app.get('/v1/connections', async (request) => {
    auth.authorize(request.caller, 'dlq-admin', '>');
    return { items: ctx.connections.list() };
  });

  app.get('/v1/stats', async (request) => {
    const caller = request.caller;
    const everything = auth.allows(caller, 'dlq-admin', '>');
    const owned = caller === undefined || !auth.enabled ? undefined : scopedGroupPrefix(caller);
    const groups = everything
      ? activity.groups()
      : activity.groups().filter((g) => owned !== undefined && g.group.startsWith(owned));
    const topics = everything
      ? activity.topics()
      : activity
          .topics()
          .filter((t) => auth.allows(caller, 'subscribe', t.topic) || auth.allows(caller, 'publish', t.topic));
    const stats = bus.transport.groupStats?.bind(bus.transport);
    const withBacklog = await Promise.all(
      groups.map(async (g, i) => {
        if (!stats || i >= MAX_GROUP_STATS) return g;
        try {
          return { ...g, ...(await stats(g.group)) };
        } catch (err) {
          return { ...g, statsError: (err as Error).message };
        }
      }),
    );
    return {
      transport: bus.transport.name,
      scope: everything ? 'all' : 'caller',
      uptimeMs: Date.now() - ctx.startedAtMs,
      topics,
      groups: withBacklog,
      // Gateway-wide figures (how many clients, how busy all of them are): the operator's view.
      ...(everything ? { connections: ctx.connections.size, history: activity.history() } : {}),
    };
  });

  app.get<{ Querystring: { status?: string; limit?: string } }>('/v1/sagas', async (request) => {
    auth.authorize(request.caller, 'dlq-admin', '>');
    if (!ctx.sagas) return { items: [], enabled: false };
    const { status, limit } = request.query;
    const statuses = status === undefined ? SAGA_UNFINISHED_STATUSES : (status.split(',') as SagaStatus[]);
    const n = limit === undefined ? 100 : Number(limit);
    if (!Number.isInteger(n) || n < 1 || n > 1000)
      throw new ValidationError('limit: an integer 1–1000 expected', { data: { path: 'limit' } });
    const items = await ctx.sagas.list({ status: statuses, limit: n });
    return { items, enabled: true };
  });
}
