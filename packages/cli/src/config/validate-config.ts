import { ConfigError, createPolicy, type JwtAlgorithm, type PolicyOptions } from '@agentbus/core';
import { parseTransportUrl } from '../open-transport.js';
import { JWT_ALGORITHMS } from '../security/jwt-key-file.js';
import { type ConfigLayer, originOf } from './config-layers.js';
import {
  type AgentbusConfig,
  type AuthConfig,
  CONFIG_DEFAULTS,
  type JwtAuthConfig,
  type JwtKeyConfig,
  LOG_LEVELS,
  type LogLevel,
  type RedisConfig,
  type WsConfig,
} from './config-types.js';

type Obj = Record<string, unknown>;

/** Shows a bad value without ever echoing much of it (it may be a secret put in the wrong field). */
function shown(value: unknown): string {
  if (value === undefined) return 'nothing';
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 40 ? `${text.slice(0, 37)}...` : text;
}

/**
 * Validation of merged configuration values: every error is a ConfigError whose message starts
 * with the field path and where the value came from, e.g.
 * `ws.maxFrameBytes (from agentbus.yaml): must be a positive integer, got "big"`.
 */
class Checker {
  constructor(private readonly origins: ReadonlyMap<string, string>) {}

  fail(path: string, problem: string, extra: Obj = {}): never {
    const from = originOf(this.origins, path);
    throw new ConfigError(`${path} (from ${from}): ${problem}`, { data: { path, from, ...extra } });
  }

  object(value: unknown, path: string, keys: readonly string[]): Obj {
    if (typeof value !== 'object' || value === null || Array.isArray(value))
      this.fail(path, `must be a mapping, got ${shown(value)}`);
    for (const k of Object.keys(value)) {
      if (!keys.includes(k))
        this.fail(path === '' ? k : `${path}.${k}`, `unknown setting; known here: ${keys.join(', ')}`);
    }
    return value as Obj;
  }

  string(value: unknown, path: string): string {
    if (typeof value !== 'string' || value.trim() === '')
      this.fail(path, `must be a non-empty string, got ${shown(value)}`);
    return value;
  }

  int(value: unknown, path: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
    if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
      const want =
        min === 1 && max === Number.MAX_SAFE_INTEGER
          ? 'a positive integer'
          : max === Number.MAX_SAFE_INTEGER
            ? `an integer ≥ ${min}`
            : `an integer ${min}–${max}`;
      this.fail(path, `must be ${want}, got ${shown(value)}`);
    }
    return value;
  }

  bool(value: unknown, path: string): boolean {
    if (typeof value !== 'boolean') this.fail(path, `must be true or false, got ${shown(value)}`);
    return value;
  }

  strings(value: unknown, path: string): string[] {
    if (!Array.isArray(value)) this.fail(path, `must be a list of strings, got ${shown(value)}`);
    return value.map((v, i) => this.string(v, `${path}[${i}]`));
  }

  stringOrStrings(value: unknown, path: string): string | string[] {
    return typeof value === 'string' ? this.string(value, path) : this.strings(value, path);
  }

  oneOf<T extends string>(value: unknown, path: string, choices: readonly T[]): T {
    if (typeof value !== 'string' || !choices.includes(value as T))
      this.fail(path, `must be one of ${choices.join(', ')}, got ${shown(value)}`);
    return value as T;
  }
}

const TOP_KEYS = [
  'transport',
  'host',
  'port',
  'logLevel',
  'auth',
  'policy',
  'ws',
  'redis',
  'maxBodyBytes',
  'maxRequestTimeoutMs',
  'drainTimeoutMs',
  'groups',
  'dashboard',
] as const;
const WS_KEYS = ['maxFrameBytes', 'sendBufferBytes', 'allowedOrigins', 'ratePerSecond', 'rateBurst', 'compression'];
const JWT_KEYS = [
  'issuer',
  'audience',
  'algorithms',
  'keys',
  'rolesClaim',
  'tenantClaim',
  'clockToleranceSec',
  'maxLifetimeMs',
  'requireKid',
];
const KEY_KEYS = ['kid', 'alg', 'secret', 'secretEnv', 'publicKeyFile'];
const KEY_SOURCES = ['secret', 'secretEnv', 'publicKeyFile'] as const;

function validateWs(c: Checker, raw: unknown): WsConfig {
  const ws = c.object(raw ?? {}, 'ws', WS_KEYS);
  const D = CONFIG_DEFAULTS.ws;
  return {
    maxFrameBytes: c.int(ws.maxFrameBytes ?? D.maxFrameBytes, 'ws.maxFrameBytes', 1),
    sendBufferBytes: c.int(ws.sendBufferBytes ?? D.sendBufferBytes, 'ws.sendBufferBytes', 1),
    ...(ws.allowedOrigins === undefined ? {} : { allowedOrigins: c.strings(ws.allowedOrigins, 'ws.allowedOrigins') }),
    ratePerSecond: c.int(ws.ratePerSecond ?? D.ratePerSecond, 'ws.ratePerSecond', 1),
    rateBurst: c.int(ws.rateBurst ?? D.rateBurst, 'ws.rateBurst', 1),
    compression: c.bool(ws.compression ?? D.compression, 'ws.compression'),
  };
}

function validateKey(c: Checker, raw: unknown, path: string): JwtKeyConfig {
  const key = c.object(raw, path, KEY_KEYS);
  const alg = c.oneOf(key.alg, `${path}.alg`, JWT_ALGORITHMS);
  const given = KEY_SOURCES.filter((s) => key[s] !== undefined);
  if (given.length !== 1)
    c.fail(
      path,
      `needs exactly one of ${KEY_SOURCES.join(', ')}${given.length > 1 ? `, got ${given.join(' and ')}` : ''}`,
    );
  const source = given[0] as (typeof KEY_SOURCES)[number];
  const value = key[source];
  // A secret's value is never shown, not even when it has the wrong type.
  if (typeof value !== 'string' || value === '') c.fail(`${path}.${source}`, 'must be a non-empty string');
  if (source !== 'publicKeyFile' && !alg.startsWith('HS'))
    c.fail(`${path}.${source}`, `${alg} needs a public key: use publicKeyFile (a PEM or JWK file)`);
  if (source === 'secretEnv' && !/^[A-Za-z_][A-Za-z0-9_]*$/.test(value))
    c.fail(`${path}.secretEnv`, 'must be the name of an environment variable');
  return {
    alg,
    ...(key.kid === undefined ? {} : { kid: c.string(key.kid, `${path}.kid`) }),
    [source]: value,
  };
}

function validateJwt(c: Checker, raw: unknown): JwtAuthConfig {
  const jwt = c.object(raw, 'auth.jwt', JWT_KEYS);
  if (!Array.isArray(jwt.keys) || jwt.keys.length === 0)
    c.fail('auth.jwt.keys', `must be a non-empty list of keys, got ${shown(jwt.keys)}`);
  const keys = jwt.keys.map((k, i) => validateKey(c, k, `auth.jwt.keys[${i}]`));
  return {
    issuer: c.stringOrStrings(jwt.issuer, 'auth.jwt.issuer'),
    audience: c.stringOrStrings(jwt.audience, 'auth.jwt.audience'),
    keys,
    ...(jwt.algorithms === undefined
      ? {}
      : {
          algorithms: c
            .strings(jwt.algorithms, 'auth.jwt.algorithms')
            .map((a, i) => c.oneOf<JwtAlgorithm>(a, `auth.jwt.algorithms[${i}]`, JWT_ALGORITHMS)),
        }),
    ...(jwt.rolesClaim === undefined ? {} : { rolesClaim: c.stringOrStrings(jwt.rolesClaim, 'auth.jwt.rolesClaim') }),
    ...(jwt.tenantClaim === undefined ? {} : { tenantClaim: c.string(jwt.tenantClaim, 'auth.jwt.tenantClaim') }),
    ...(jwt.clockToleranceSec === undefined
      ? {}
      : { clockToleranceSec: c.int(jwt.clockToleranceSec, 'auth.jwt.clockToleranceSec', 0) }),
    ...(jwt.maxLifetimeMs === undefined
      ? {}
      : { maxLifetimeMs: c.int(jwt.maxLifetimeMs, 'auth.jwt.maxLifetimeMs', 1) }),
    ...(jwt.requireKid === undefined ? {} : { requireKid: c.bool(jwt.requireKid, 'auth.jwt.requireKid') }),
  };
}

function validateAuth(c: Checker, raw: unknown): AuthConfig {
  const auth = c.object(raw, 'auth', ['jwt']);
  if (auth.jwt === undefined) c.fail('auth.jwt', 'is required when auth is given (issuer, audience, keys)');
  return { jwt: validateJwt(c, auth.jwt) };
}

/** Roles and ACL entries, checked by the core's policy itself so that the rules are the same. */
function validatePolicy(c: Checker, raw: unknown): PolicyOptions {
  const policy = c.object(raw, 'policy', ['roles', 'acl']) as PolicyOptions;
  try {
    createPolicy(policy);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    const inner = err.path ?? '';
    const reason =
      inner !== '' && err.message.startsWith(`${inner}: `) ? err.message.slice(inner.length + 2) : err.message;
    c.fail(inner === '' ? 'policy' : `policy.${inner}`, reason);
  }
  return policy;
}

function validateRedis(c: Checker, raw: unknown): RedisConfig {
  const redis = c.object(raw ?? {}, 'redis', ['keyPrefix']);
  return redis.keyPrefix === undefined ? {} : { keyPrefix: c.string(redis.keyPrefix, 'redis.keyPrefix') };
}

/**
 * Validates merged configuration values into one typed {@link AgentbusConfig}, defaults filled
 * in. Unknown settings, wrong types and out-of-range values are ConfigErrors naming the field and
 * its origin; key material is never part of a message.
 */
export function validateConfig(layer: ConfigLayer): AgentbusConfig {
  const c = new Checker(layer.origins);
  const raw = c.object(layer.values, '', TOP_KEYS);
  const D = CONFIG_DEFAULTS;
  const transport = c.string(raw.transport ?? D.transport, 'transport');
  try {
    parseTransportUrl(transport);
  } catch (err) {
    if (err instanceof ConfigError) c.fail('transport', err.message.replace(/^transport: /, ''));
    throw err;
  }
  const auth = raw.auth === undefined ? undefined : validateAuth(c, raw.auth);
  const policy = raw.policy === undefined ? undefined : validatePolicy(c, raw.policy);
  if (policy && !auth) c.fail('policy', 'needs auth: permissions apply to authenticated callers');
  return {
    transport,
    host: c.string(raw.host ?? D.host, 'host'),
    port: c.int(raw.port ?? D.port, 'port', 0, 65_535),
    logLevel: c.oneOf<LogLevel>(raw.logLevel ?? D.logLevel, 'logLevel', LOG_LEVELS),
    ...(auth ? { auth } : {}),
    ...(policy ? { policy } : {}),
    ws: validateWs(c, raw.ws),
    redis: validateRedis(c, raw.redis),
    maxBodyBytes: c.int(raw.maxBodyBytes ?? D.maxBodyBytes, 'maxBodyBytes', 1),
    maxRequestTimeoutMs: c.int(raw.maxRequestTimeoutMs ?? D.maxRequestTimeoutMs, 'maxRequestTimeoutMs', 1),
    drainTimeoutMs: c.int(raw.drainTimeoutMs ?? D.drainTimeoutMs, 'drainTimeoutMs', 1),
    groups: c.strings(raw.groups ?? D.groups, 'groups'),
    dashboard: c.bool(raw.dashboard ?? D.dashboard, 'dashboard'),
  };
}
