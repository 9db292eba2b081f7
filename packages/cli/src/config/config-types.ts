import type { JwtAlgorithm, PolicyOptions } from '@agentbus/core';
import { GATEWAY_DEFAULTS } from '@agentbus/gateway';
import { DEFAULT_TRANSPORT_URL } from '../open-transport.js';

/** pino's levels, quietest last; `silent` turns the gateway's logs off. */
export const LOG_LEVELS = Object.freeze(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const);
export type LogLevel = (typeof LOG_LEVELS)[number];

/**
 * One JWT verification key. Exactly one of `secret` (an HS secret written in the file: fine for
 * development, prefer the others), `secretEnv` (the name of an environment variable holding the
 * HS secret) or `publicKeyFile` (a PEM or JWK file; for the HS algorithms a raw secret file;
 * relative to the configuration file's directory) gives the key material, which is never printed.
 */
export interface JwtKeyConfig {
  readonly kid?: string;
  readonly alg: JwtAlgorithm;
  readonly secret?: string;
  readonly secretEnv?: string;
  readonly publicKeyFile?: string;
}

/** `auth.jwt`: how the gateway verifies bearer tokens (see createJwtVerifier in the core). */
export interface JwtAuthConfig {
  readonly issuer: string | readonly string[];
  readonly audience: string | readonly string[];
  /** Accepted algorithms; default: the keys' algorithms. */
  readonly algorithms?: readonly JwtAlgorithm[];
  readonly keys: readonly JwtKeyConfig[];
  readonly rolesClaim?: string | readonly string[];
  readonly tenantClaim?: string;
  readonly clockToleranceSec?: number;
  readonly maxLifetimeMs?: number;
  readonly requireKid?: boolean;
}

/** `auth`: absent, the gateway is open to anyone who reaches its port (it logs a warning). */
export interface AuthConfig {
  readonly jwt: JwtAuthConfig;
}

/** `ws`: WebSocket limits, passed to the gateway's `ws` options. */
export interface WsConfig {
  readonly maxFrameBytes: number;
  readonly sendBufferBytes: number;
  /** Browser origins allowed to open a socket; absent: the gateway's own origin only. */
  readonly allowedOrigins?: readonly string[];
  readonly ratePerSecond: number;
  readonly rateBurst: number;
  readonly compression: boolean;
}

/** `redis`: options of the Redis transport that a URL cannot carry. */
export interface RedisConfig {
  /** Prefix of every Redis key (default `agentbus`), to share one Redis between deployments. */
  readonly keyPrefix?: string;
}

/**
 * The configuration of `agentbus serve`, after the YAML file, the `AGENTBUS_*` environment and
 * the flags were merged (flags win) and validated. See docs/configuration.md.
 */
export interface AgentbusConfig {
  /** Transport URL, e.g. `sqlite:./.agentbus/bus.db`, `redis://127.0.0.1:6379`. */
  readonly transport: string;
  readonly host: string;
  /** TCP port; 0 picks a free one (the printed URL tells which). */
  readonly port: number;
  readonly logLevel: LogLevel;
  readonly auth?: AuthConfig;
  /** Topic permissions (roles and ACL entries); needs `auth`. */
  readonly policy?: PolicyOptions;
  readonly ws: WsConfig;
  readonly redis: RedisConfig;
  readonly maxBodyBytes: number;
  readonly maxRequestTimeoutMs: number;
  readonly drainTimeoutMs: number;
  /** Consumer groups always shown in stats and on the dashboard. */
  readonly groups: readonly string[];
  /** Serve the dashboard at `/`. */
  readonly dashboard: boolean;
}

/** Defaults of {@link AgentbusConfig}; the gateway's own defaults for the limits. */
export const CONFIG_DEFAULTS = Object.freeze({
  transport: DEFAULT_TRANSPORT_URL,
  host: '127.0.0.1',
  port: 8080,
  logLevel: 'info' as LogLevel,
  maxBodyBytes: GATEWAY_DEFAULTS.maxBodyBytes,
  maxRequestTimeoutMs: GATEWAY_DEFAULTS.maxRequestTimeoutMs,
  drainTimeoutMs: GATEWAY_DEFAULTS.drainTimeoutMs,
  groups: Object.freeze([]) as readonly string[],
  dashboard: GATEWAY_DEFAULTS.dashboard,
  ws: Object.freeze({
    maxFrameBytes: GATEWAY_DEFAULTS.ws.maxFrameBytes,
    sendBufferBytes: GATEWAY_DEFAULTS.ws.sendBufferBytes,
    ratePerSecond: GATEWAY_DEFAULTS.ws.ratePerSecond,
    rateBurst: GATEWAY_DEFAULTS.ws.rateBurst,
    compression: GATEWAY_DEFAULTS.ws.compression,
  }),
});

/** The configuration file looked for in the working directory when none is named. */
export const DEFAULT_CONFIG_FILE = 'agentbus.yaml';
/** The environment variable naming the configuration file when `--config` is absent. */
export const CONFIG_FILE_ENV = 'AGENTBUS_CONFIG';
