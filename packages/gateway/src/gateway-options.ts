import { type Bus, ConfigError, type SagaRepository } from '@agentbus/core';
import type { Logger as PinoLogger } from 'pino';
import type { GatewayAuthOptions } from './auth.js';

/** WebSocket limits (see docs/protocol.md). */
export interface WebSocketOptions {
  /** Frames larger than this are refused with a `FRAME_TOO_LARGE` close (default 64 KiB). */
  readonly maxFrameBytes?: number;
  /**
   * Bytes queued for a slow client before the gateway stops handing it messages (backpressure);
   * past twice this the socket is closed with reason `slow-consumer` (default 1 MiB).
   */
  readonly sendBufferBytes?: number;
  /**
   * Browser origins allowed to open a socket. Default: only the gateway's own origin; requests
   * without an `Origin` header (agents, not browsers) are always allowed. `['*']` allows any.
   */
  readonly allowedOrigins?: readonly string[];
  /** Frames a connection may send per second on average (default 1,000) … */
  readonly ratePerSecond?: number;
  /** … and in one burst (default 2,000). Past it a frame gets a `RATE_LIMITED` error frame. */
  readonly rateBurst?: number;
  /** permessage-deflate; off by default (CRIME/BREACH-style leaks, CPU). */
  readonly compression?: boolean;
  /** Server pings this often; a client that misses two is dropped (default 30 s). */
  readonly pingIntervalMs?: number;
}

export interface GatewayOptions {
  /** The bus the gateway serves. It is not closed with the gateway unless `ownsBus`. */
  readonly bus: Bus;
  /** JWT authentication and topic permissions. Absent: open to anyone who reaches the port (a warning is logged). */
  readonly auth?: GatewayAuthOptions;
  /** Sagas shown by the dashboard and `GET /v1/sagas`. */
  readonly sagas?: SagaRepository;
  /** pino logger; default: JSON lines on stderr at `info`. `false`: silent. */
  readonly logger?: PinoLogger | false;
  /** Largest HTTP request body (default 1 MiB). */
  readonly maxBodyBytes?: number;
  /** Longest `timeoutMs` a request-reply call may ask for, and its default (30 s). */
  readonly maxRequestTimeoutMs?: number;
  readonly ws?: WebSocketOptions;
  /** Consumer groups to always show in stats and the dashboard, besides those the gateway sees. */
  readonly groups?: readonly string[];
  /** Serve the dashboard at `/` (default true). */
  readonly dashboard?: boolean;
  /** Close the bus when the gateway closes (default false). */
  readonly ownsBus?: boolean;
  /** How long close waits for in-flight requests and handlers before it cuts them (default 10 s). */
  readonly drainTimeoutMs?: number;
}

export const GATEWAY_DEFAULTS = Object.freeze({
  maxBodyBytes: 1024 * 1024,
  maxRequestTimeoutMs: 30_000,
  dashboard: true,
  ownsBus: false,
  drainTimeoutMs: 10_000,
  ws: Object.freeze({
    maxFrameBytes: 64 * 1024,
    sendBufferBytes: 1024 * 1024,
    ratePerSecond: 1_000,
    rateBurst: 2_000,
    compression: false,
    pingIntervalMs: 30_000,
  }),
});

export interface ResolvedWebSocketOptions {
  readonly maxFrameBytes: number;
  readonly sendBufferBytes: number;
  readonly allowedOrigins: readonly string[] | undefined;
  readonly ratePerSecond: number;
  readonly rateBurst: number;
  readonly compression: boolean;
  readonly pingIntervalMs: number;
}

export interface ResolvedGatewayOptions {
  readonly maxBodyBytes: number;
  readonly maxRequestTimeoutMs: number;
  readonly dashboard: boolean;
  readonly ownsBus: boolean;
  readonly drainTimeoutMs: number;
  readonly groups: readonly string[];
  readonly ws: ResolvedWebSocketOptions;
}

function positiveInt(value: unknown, path: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1)
    throw new ConfigError(`must be a positive integer, got ${JSON.stringify(value)}`, { path });
  return value;
}

/** Validates options once; a ConfigError names the bad field (`gateway.ws.maxFrameBytes` …). */
export function resolveGatewayOptions(options: GatewayOptions): ResolvedGatewayOptions {
  if (!options || typeof options.bus?.publish !== 'function')
    throw new ConfigError('a Bus is required', { path: 'gateway.bus' });
  const D = GATEWAY_DEFAULTS;
  const ws = options.ws ?? {};
  const origins = ws.allowedOrigins;
  if (origins !== undefined && (!Array.isArray(origins) || origins.some((o) => typeof o !== 'string')))
    throw new ConfigError('must be a list of origins', { path: 'gateway.ws.allowedOrigins' });
  const groups = options.groups ?? [];
  if (!Array.isArray(groups) || groups.some((g) => typeof g !== 'string' || g === ''))
    throw new ConfigError('must be a list of group names', { path: 'gateway.groups' });
  return {
    maxBodyBytes: positiveInt(options.maxBodyBytes ?? D.maxBodyBytes, 'gateway.maxBodyBytes'),
    maxRequestTimeoutMs: positiveInt(
      options.maxRequestTimeoutMs ?? D.maxRequestTimeoutMs,
      'gateway.maxRequestTimeoutMs',
    ),
    dashboard: options.dashboard ?? D.dashboard,
    ownsBus: options.ownsBus ?? D.ownsBus,
    drainTimeoutMs: positiveInt(options.drainTimeoutMs ?? D.drainTimeoutMs, 'gateway.drainTimeoutMs'),
    groups,
    ws: {
      maxFrameBytes: positiveInt(ws.maxFrameBytes ?? D.ws.maxFrameBytes, 'gateway.ws.maxFrameBytes'),
      sendBufferBytes: positiveInt(ws.sendBufferBytes ?? D.ws.sendBufferBytes, 'gateway.ws.sendBufferBytes'),
      allowedOrigins: origins,
      ratePerSecond: positiveInt(ws.ratePerSecond ?? D.ws.ratePerSecond, 'gateway.ws.ratePerSecond'),
      rateBurst: positiveInt(ws.rateBurst ?? D.ws.rateBurst, 'gateway.ws.rateBurst'),
      compression: ws.compression ?? D.ws.compression,
      pingIntervalMs: positiveInt(ws.pingIntervalMs ?? D.ws.pingIntervalMs, 'gateway.ws.pingIntervalMs'),
    },
  };
}
