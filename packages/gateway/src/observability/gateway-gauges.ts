import type { GroupStats } from '@agentbus/core';
import { Gauge, type Registry } from 'prom-client';
import type { GatewayContext } from '../context.js';
import { BoundedLabels } from './bounded-labels.js';
import { CIRCUIT_STATE_VALUE, trackedCircuits } from './circuit-tracking.js';
import { type MetricsOptions, type ResolvedMetricsOptions, resolveMetricsOptions } from './metrics-options.js';

/**
 * Gauges read at scrape time:
 *
 * - `agentbus_group_backlog{group}`, `agentbus_group_in_flight{group}` — from the transport's
 *   `groupStats` (when it has one) for the groups the gateway knows (`ctx.activity.groups()`),
 *   at most `maxGroupStats` of them, each given `groupStatsTimeoutMs`; a group whose stats fail
 *   is left out of that scrape
 * - `agentbus_circuit_state{name}` — breakers registered with `trackCircuit`
 * - `agentbus_gateway_connections` — open WebSocket connections
 */
export function registerGatewayGauges(registry: Registry, ctx: GatewayContext, options: MetricsOptions = {}): void {
  const o = resolveMetricsOptions(options);
  const registers = [registry];
  const groups = new BoundedLabels(o.maxLabelValues);
  // One round of group stats serves both gauges of a scrape (their collects run concurrently).
  let pending: Promise<Map<string, GroupStats>> | undefined;
  const groupStats = (): Promise<Map<string, GroupStats>> => {
    pending ??= loadGroupStats(ctx, groups, o).finally(() => {
      pending = undefined;
    });
    return pending;
  };
  new Gauge({
    name: 'agentbus_group_backlog',
    help: 'Messages waiting for the group (ready or delayed), per the transport.',
    labelNames: ['group'],
    registers,
    async collect() {
      const stats = await groupStats();
      this.reset();
      for (const [group, s] of stats) this.set({ group }, s.backlog);
    },
  });
  new Gauge({
    name: 'agentbus_group_in_flight',
    help: 'Messages delivered to the group and not yet settled, per the transport.',
    labelNames: ['group'],
    registers,
    async collect() {
      const stats = await groupStats();
      this.reset();
      for (const [group, s] of stats) this.set({ group }, s.inFlight);
    },
  });
  new Gauge({
    name: 'agentbus_circuit_state',
    help: 'Circuit breaker state: 0 closed, 1 half-open, 2 open.',
    labelNames: ['name'],
    registers,
    collect() {
      this.reset();
      for (const [name, breaker] of trackedCircuits()) this.set({ name }, CIRCUIT_STATE_VALUE[breaker.state]);
    },
  });
  new Gauge({
    name: 'agentbus_gateway_connections',
    help: 'Open WebSocket connections.',
    registers,
    collect() {
      this.set(ctx.connections.size);
    },
  });
}

/** Stats by group label; groups past the label cap add up under `other`. */
async function loadGroupStats(
  ctx: GatewayContext,
  labels: BoundedLabels,
  o: ResolvedMetricsOptions,
): Promise<Map<string, GroupStats>> {
  const out = new Map<string, GroupStats>();
  const transport = ctx.bus.transport;
  if (typeof transport.groupStats !== 'function') return out;
  const names = ctx.activity
    .groups()
    .slice(0, o.maxGroupStats)
    .map((g) => g.group);
  const results = await Promise.all(
    names.map((group) => withTimeout(transport.groupStats!(group), o.groupStatsTimeoutMs).catch(() => undefined)),
  );
  results.forEach((stats, i) => {
    if (stats === undefined) return;
    const group = labels.value(names[i] as string);
    const sum = out.get(group);
    out.set(group, {
      backlog: (sum?.backlog ?? 0) + stats.backlog,
      inFlight: (sum?.inFlight ?? 0) + stats.inFlight,
    });
  });
  return out;
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
