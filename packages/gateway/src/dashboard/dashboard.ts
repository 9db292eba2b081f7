import type { FastifyInstance } from 'fastify';
import type { GatewayContext } from '../context.js';

/** The dashboard at `/`. Placeholder until it lands. */
export async function registerDashboard(_app: FastifyInstance, _ctx: GatewayContext): Promise<void> {}
