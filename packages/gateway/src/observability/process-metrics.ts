import { collectDefaultMetrics, Registry } from 'prom-client';

let shared: Registry | undefined;

/**
 * prom-client's default process metrics (CPU, memory, event-loop lag, GC, handles …), in one
 * registry per process however many gateways run in it: collecting them starts an event-loop
 * monitor and a GC observer that are never stopped, and the process is one process. Not the
 * global default registry, which stays the application's.
 */
export function processMetricsRegistry(): Registry {
  if (shared === undefined) {
    shared = new Registry();
    collectDefaultMetrics({ register: shared });
  }
  return shared;
}
