import { existsSync, readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { ConfigError } from '@agentbus/core';
import { LineCounter, parseDocument } from 'yaml';
import { CONFIG_FILE_ENV, DEFAULT_CONFIG_FILE } from './config-types.js';

/** How a scalar from the environment or a flag is read before validation. */
export type ScalarKind = 'string' | 'int' | 'bool' | 'list';

/** One `AGENTBUS_*` variable and the configuration field it sets. */
export interface EnvMapping {
  readonly env: string;
  readonly path: string;
  readonly kind: ScalarKind;
}

/**
 * The environment variables `agentbus serve` reads, each setting one field. Lists are
 * comma-separated; booleans are `true`/`false`/`1`/`0`. `auth` and `policy` come from the file only.
 */
export const CONFIG_ENV: readonly EnvMapping[] = Object.freeze([
  { env: 'AGENTBUS_TRANSPORT', path: 'transport', kind: 'string' },
  { env: 'AGENTBUS_HOST', path: 'host', kind: 'string' },
  { env: 'AGENTBUS_PORT', path: 'port', kind: 'int' },
  { env: 'AGENTBUS_LOG_LEVEL', path: 'logLevel', kind: 'string' },
  { env: 'AGENTBUS_MAX_BODY_BYTES', path: 'maxBodyBytes', kind: 'int' },
  { env: 'AGENTBUS_MAX_REQUEST_TIMEOUT_MS', path: 'maxRequestTimeoutMs', kind: 'int' },
  { env: 'AGENTBUS_DRAIN_TIMEOUT_MS', path: 'drainTimeoutMs', kind: 'int' },
  { env: 'AGENTBUS_GROUPS', path: 'groups', kind: 'list' },
  { env: 'AGENTBUS_DASHBOARD', path: 'dashboard', kind: 'bool' },
  { env: 'AGENTBUS_REDIS_KEY_PREFIX', path: 'redis.keyPrefix', kind: 'string' },
  { env: 'AGENTBUS_WS_MAX_FRAME_BYTES', path: 'ws.maxFrameBytes', kind: 'int' },
  { env: 'AGENTBUS_WS_SEND_BUFFER_BYTES', path: 'ws.sendBufferBytes', kind: 'int' },
  { env: 'AGENTBUS_WS_ALLOWED_ORIGINS', path: 'ws.allowedOrigins', kind: 'list' },
  { env: 'AGENTBUS_WS_RATE_PER_SECOND', path: 'ws.ratePerSecond', kind: 'int' },
  { env: 'AGENTBUS_WS_RATE_BURST', path: 'ws.rateBurst', kind: 'int' },
  { env: 'AGENTBUS_WS_COMPRESSION', path: 'ws.compression', kind: 'bool' },
] as const);

/**
 * Configuration values from one place, plus where each came from (`agentbus.yaml`,
 * `AGENTBUS_PORT`, `--port`), so that an error can say which to fix.
 */
export interface ConfigLayer {
  readonly values: Readonly<Record<string, unknown>>;
  /** Origin of each leaf, by dotted path (arrays are leaves). */
  readonly origins: ReadonlyMap<string, string>;
}

/**
 * A string from the environment or a flag as the type the field wants. What does not parse is
 * kept as the string, so that validation reports it with its origin (`got "big"`).
 */
export function coerceScalar(text: string, kind: ScalarKind): unknown {
  const t = text.trim();
  if (kind === 'int') return /^-?\d+$/.test(t) ? Number(t) : text;
  if (kind === 'bool') {
    if (/^(true|1|yes|on)$/i.test(t)) return true;
    if (/^(false|0|no|off)$/i.test(t)) return false;
    return text;
  }
  if (kind === 'list') return t === '' ? [] : t.split(',').map((s) => s.trim());
  return text;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function setPath(target: Record<string, unknown>, path: string, value: unknown): void {
  const parts = path.split('.');
  let node = target;
  for (const part of parts.slice(0, -1)) {
    const next = node[part];
    if (!isPlainObject(next)) node[part] = {};
    node = node[part] as Record<string, unknown>;
  }
  node[parts.at(-1) as string] = value;
}

/** Builds a layer from dotted-path entries (environment variables, flags). */
export function layerOf(entries: readonly { path: string; value: unknown; origin: string }[]): ConfigLayer {
  const values: Record<string, unknown> = {};
  const origins = new Map<string, string>();
  for (const e of entries) {
    setPath(values, e.path, e.value);
    origins.set(e.path, e.origin);
  }
  return { values, origins };
}

/** The layer of the `AGENTBUS_*` variables that are set (an empty variable counts as unset). */
export function envLayer(env: NodeJS.ProcessEnv): ConfigLayer {
  const entries = CONFIG_ENV.flatMap((m) => {
    const text = env[m.env];
    return text === undefined || text === ''
      ? []
      : [{ path: m.path, value: coerceScalar(text, m.kind), origin: m.env }];
  });
  return layerOf(entries);
}

function leaves(value: unknown, prefix: string, origin: string, out: Map<string, string>): void {
  if (isPlainObject(value) && Object.keys(value).length > 0) {
    for (const [k, v] of Object.entries(value)) leaves(v, prefix === '' ? k : `${prefix}.${k}`, origin, out);
  } else if (prefix !== '') out.set(prefix, origin);
}

/** A layer from a parsed document, every leaf attributed to `origin`. */
export function objectLayer(values: Record<string, unknown>, origin: string): ConfigLayer {
  const origins = new Map<string, string>();
  leaves(values, '', origin, origins);
  return { values, origins };
}

/** Where the configuration file was found, or undefined when there is none. */
export interface ConfigFileChoice {
  readonly path: string;
  /** `--config`, `$AGENTBUS_CONFIG` or `default`. */
  readonly from: string;
}

/**
 * The configuration file: `--config`, else `$AGENTBUS_CONFIG`, else `./agentbus.yaml` when it
 * exists. A file named by the flag or the variable must exist (ConfigError otherwise).
 */
export function chooseConfigFile(
  flag: string | undefined,
  env: NodeJS.ProcessEnv,
  cwd: string,
): ConfigFileChoice | undefined {
  const named =
    flag !== undefined
      ? { path: flag, from: '--config' }
      : env[CONFIG_FILE_ENV]
        ? { path: env[CONFIG_FILE_ENV] as string, from: CONFIG_FILE_ENV }
        : undefined;
  if (named) {
    const path = resolve(cwd, named.path);
    if (!existsSync(path))
      throw new ConfigError(`configuration file ${named.path} (from ${named.from}) does not exist`, {
        data: { path: 'config', from: named.from },
      });
    return { path, from: named.from };
  }
  const fallback = resolve(cwd, DEFAULT_CONFIG_FILE);
  return existsSync(fallback) ? { path: fallback, from: 'default' } : undefined;
}

/**
 * Reads a YAML (or JSON, which is YAML) configuration file into a layer. Syntax errors name the
 * file, line and column; relative key files (`auth.jwt.keys[].publicKeyFile`) are resolved
 * against the file's directory. `label` is how errors name the file.
 */
export function fileLayer(path: string, label: string): ConfigLayer {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(`configuration file ${label}: cannot be read (${(err as NodeJS.ErrnoException).code})`, {
      data: { path: 'config' },
    });
  }
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { prettyErrors: false, uniqueKeys: true, lineCounter });
  const problem = doc.errors[0];
  if (problem) {
    const pos = lineCounter.linePos(problem.pos[0]);
    const where = ` at line ${pos.line}, column ${pos.col}`;
    // The YAML parser's message may quote the line, which may hold a secret: keep its code only.
    throw new ConfigError(`configuration file ${label}: invalid YAML${where} (${problem.code})`, {
      data: { path: 'config', line: pos.line },
    });
  }
  const values = doc.toJS() ?? {};
  if (!isPlainObject(values))
    throw new ConfigError(`configuration file ${label}: must be a mapping of settings`, { data: { path: 'config' } });
  resolveKeyFiles(values, dirname(path));
  return objectLayer(values, label);
}

function resolveKeyFiles(values: Record<string, unknown>, dir: string): void {
  const auth = values.auth;
  const jwt = isPlainObject(auth) ? auth.jwt : undefined;
  const keys = isPlainObject(jwt) ? jwt.keys : undefined;
  if (!Array.isArray(keys)) return;
  for (const key of keys) {
    if (isPlainObject(key) && typeof key.publicKeyFile === 'string' && !isAbsolute(key.publicKeyFile))
      key.publicKeyFile = resolve(dir, key.publicKeyFile);
  }
}

/**
 * Merges layers, later ones winning field by field (objects merge, arrays and scalars replace).
 * The result carries every leaf's origin.
 */
export function mergeLayers(layers: readonly ConfigLayer[]): ConfigLayer {
  const values: Record<string, unknown> = {};
  const origins = new Map<string, string>();
  const merge = (target: Record<string, unknown>, source: Record<string, unknown>) => {
    for (const [k, v] of Object.entries(source)) {
      if (isPlainObject(v) && isPlainObject(target[k])) merge(target[k] as Record<string, unknown>, v);
      else target[k] = isPlainObject(v) ? structuredClone(v) : v;
    }
  };
  for (const layer of layers) {
    merge(values, layer.values as Record<string, unknown>);
    for (const [path, origin] of layer.origins) {
      // A replaced subtree forgets where its old leaves came from.
      for (const old of origins.keys()) if (old.startsWith(`${path}.`)) origins.delete(old);
      origins.set(path, origin);
    }
  }
  return { values, origins };
}

/**
 * Where the value at `path` (`ws.maxFrameBytes`, `auth.jwt.keys[0].alg`) came from: its own
 * origin, else its nearest recorded ancestor's, else that of any leaf below it.
 */
export function originOf(origins: ReadonlyMap<string, string>, path: string): string {
  for (let p = path; p !== ''; p = p.replace(/(\.[^.[\]]*|\[\d+\])$/, '')) {
    const hit = origins.get(p);
    if (hit !== undefined) return hit;
    if (!/[.[]/.test(p)) break;
  }
  for (const [leaf, origin] of origins) if (leaf.startsWith(`${path}.`)) return origin;
  return 'default';
}
