import type { AgentDirectory, Bus, SagaRepository } from '@agentbus/core';
import type { FastifyBaseLogger } from 'fastify';
import type { Activity } from './activity.js';
import type { Caller, GatewayAuth } from './auth.js';
import type { ResolvedGatewayOptions } from './gateway-options.js';

/** One subscription a WebSocket client holds. */
export interface ClientSubscriptionInfo {
  readonly id: string;
  readonly pattern: string;
  readonly group: string;
  /** A durable consumer keeps its group (and what is published meanwhile) after the client leaves. */
  readonly durable: boolean;
}

/** What `GET /v1/connections` and the dashboard show of a WebSocket client. */
export interface ConnectionInfo {
  readonly id: string;
  readonly subject: string;
  readonly remoteAddress: string;
  readonly connectedAtMs: number;
  readonly subscriptions: readonly ClientSubscriptionInfo[];
  readonly framesIn: number;
  readonly framesOut: number;
  /** Bytes waiting in the socket's send buffer right now. */
  readonly bufferedBytes: number;
}

/** The open WebSocket connections (the WebSocket module keeps it). */
export interface ConnectionRegistry {
  readonly size: number;
  list(): ConnectionInfo[];
  /** Closes every connection with `reason` (shutdown: 1001 going away), resolving when they are closed. */
  closeAll(reason: string): Promise<void>;
}

/** What every route module of the gateway receives. */
export interface GatewayContext {
  readonly bus: Bus;
  readonly auth: GatewayAuth;
  readonly options: ResolvedGatewayOptions;
  readonly log: FastifyBaseLogger;
  readonly activity: Activity;
  readonly agents: AgentDirectory;
  readonly sagas: SagaRepository | undefined;
  /** Set by the WebSocket module when it registers. */
  connections: ConnectionRegistry;
  /** Aborted when the gateway starts closing: long operations (request-reply, streams) give up. */
  readonly closing: AbortSignal;
  /** When the gateway started (epoch ms). */
  readonly startedAtMs: number;
}

declare module 'fastify' {
  interface FastifyRequest {
    /** The authenticated caller of a `/v1` request. */
    caller: Caller;
  }
}

/** An empty registry, until the WebSocket module replaces it. */
export const NO_CONNECTIONS: ConnectionRegistry = Object.freeze({
  size: 0,
  list: () => [],
  closeAll: async () => {},
});
