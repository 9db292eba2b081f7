import type { FastifyInstance } from 'fastify';
import type { GatewayContext } from '../context.js';

/** The WebSocket protocol at `/v1/ws` (docs/protocol.md). Placeholder until it lands. */
export async function registerWebSocket(_app: FastifyInstance, _ctx: GatewayContext): Promise<void> {}
