import websocket from '@fastify/websocket';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { bearerToken } from '../auth.js';
import type { GatewayContext } from '../context.js';
import { HttpError } from '../http-errors.js';
import { type UpgradeAuth, WsConnection } from './ws-connection.js';
import { isOriginAllowed } from './ws-origin.js';
import { WS_CLOSE } from './ws-protocol.js';
import { WsConnectionRegistry } from './ws-registry.js';

/** The path of the WebSocket protocol. */
export const WS_PATH = '/v1/ws';

const upgradeAuth = new WeakMap<FastifyRequest, UpgradeAuth>();

/** The token of an upgrade request: `?token=` or `Authorization: Bearer`. */
function upgradeToken(request: FastifyRequest): string | undefined {
  const query = request.query as Record<string, unknown> | undefined;
  const fromQuery = query?.token;
  if (typeof fromQuery === 'string' && fromQuery !== '') return fromQuery;
  return bearerToken(request.headers.authorization);
}

/**
 * The WebSocket protocol at `/v1/ws` (docs/protocol.md): JSON text frames to subscribe with
 * acknowledgements and flow control, publish, request-reply and reply, over the gateway's bus,
 * with authentication, topic permissions, an Origin allowlist, frame size and rate limits, and
 * backpressure. Sets `ctx.connections` to the registry of open sockets.
 */
export async function registerWebSocket(app: FastifyInstance, ctx: GatewayContext): Promise<void> {
  const { ws } = ctx.options;
  const registry = new WsConnectionRegistry(ws.pingIntervalMs);
  ctx.connections = registry;
  await app.register(websocket, {
    options: {
      maxPayload: ws.maxFrameBytes,
      perMessageDeflate: ws.compression,
      clientTracking: false,
    },
    // The registry says goodbye (1001) and releases deliveries; the plugin's default would close with 1005.
    preClose: (done) => {
      registry.closeAll('server shutting down').then(() => done(), done);
    },
    // Socket errors (an oversized frame, a reset) end in a close event the connection handles.
    errorHandler: (err, socket, request) => {
      request.log.debug({ err }, 'websocket error');
      if (socket.readyState !== socket.CLOSING && socket.readyState !== socket.CLOSED) socket.terminate();
    },
  });

  app.get(
    WS_PATH,
    {
      websocket: true,
      onRequest: async (request) => {
        const origin = request.headers.origin;
        if (!isOriginAllowed(origin, request.headers.host, ws.allowedOrigins))
          throw new HttpError('FORBIDDEN', 'this origin may not open a WebSocket', { origin });
      },
      preValidation: async (request) => {
        const token = ctx.auth.enabled ? upgradeToken(request) : undefined;
        if (ctx.auth.enabled && token === undefined) {
          upgradeAuth.set(request, {});
          return;
        }
        try {
          upgradeAuth.set(request, { caller: await ctx.auth.authenticate(token) });
        } catch (error) {
          upgradeAuth.set(request, { error });
        }
      },
    },
    (socket, request) => {
      if (registry.closing) {
        socket.close(WS_CLOSE.goingAway, 'server shutting down');
        return;
      }
      const conn = new WsConnection(ctx, socket, request.ip, upgradeAuth.get(request) ?? {});
      upgradeAuth.delete(request);
      registry.add(conn);
    },
  );
}
