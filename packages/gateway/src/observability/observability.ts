import type { FastifyInstance } from 'fastify';
import type { GatewayContext } from '../context.js';

/** Metrics (`GET /metrics`), tracing and request logging. Placeholder until it lands. */
export async function registerObservability(_app: FastifyInstance, _ctx: GatewayContext): Promise<void> {}
