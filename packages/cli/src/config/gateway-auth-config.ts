import {
  ConfigError,
  createJwtVerifier,
  createPolicy,
  type JwtKeyInput,
  type JwtVerificationKey,
} from '@agentbus/core';
import type { GatewayAuthOptions } from '@agentbus/gateway';
import type { Output } from '../output.js';
import { readJwtKeyFile } from '../security/jwt-key-file.js';
import type { AgentbusConfig, JwtKeyConfig } from './config-types.js';

async function keyOf(
  key: JwtKeyConfig,
  path: string,
  from: string,
  env: NodeJS.ProcessEnv,
  out: Output,
): Promise<JwtVerificationKey> {
  const kid = key.kid === undefined ? {} : { kid: key.kid };
  if (key.secret !== undefined) return { ...kid, alg: key.alg, key: key.secret };
  if (key.secretEnv !== undefined) {
    const secret = env[key.secretEnv];
    if (secret === undefined || secret === '')
      throw new ConfigError(`${path}.secretEnv (from ${from}): environment variable ${key.secretEnv} is not set`, {
        data: { path: `${path}.secretEnv`, from },
      });
    return { ...kid, alg: key.alg, key: secret };
  }
  const file = await readJwtKeyFile(key.publicKeyFile as string, key.alg, out);
  const fileKid = key.kid ?? file.kid;
  return { ...(fileKid === undefined ? {} : { kid: fileKid }), alg: key.alg, key: file.key as JwtKeyInput };
}

/**
 * The gateway's `auth` option from `auth` and `policy`: reads the key material (from the file,
 * the named environment variables or key files) and builds the JWT verifier and the policy.
 * Undefined without `auth`. Errors are ConfigErrors naming the field (`auth.jwt.keys[0].key`)
 * and `from`, the configuration file; key material is never part of a message.
 */
export async function gatewayAuthOf(
  config: AgentbusConfig,
  from: string,
  out: Output,
  env: NodeJS.ProcessEnv = process.env,
): Promise<GatewayAuthOptions | undefined> {
  const jwt = config.auth?.jwt;
  if (!jwt) return undefined;
  const keys = await Promise.all(jwt.keys.map((k, i) => keyOf(k, `auth.jwt.keys[${i}]`, from, env, out)));
  const { keys: _specs, ...rest } = jwt;
  try {
    const verifier = createJwtVerifier({ ...rest, keys });
    return { verifier, ...(config.policy ? { policy: createPolicy(config.policy) } : {}) };
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    // The core's messages name the option and never show a key; restate it as a config path.
    const inner = err.path ?? '';
    const reason =
      inner !== '' && err.message.startsWith(`${inner}: `) ? err.message.slice(inner.length + 2) : err.message;
    // `keys[0].key` is the key material: name the setting that gave it.
    const keyIndex = /^keys\[(\d+)\]\.key$/.exec(inner)?.[1];
    const spec = keyIndex === undefined ? undefined : jwt.keys[Number(keyIndex)];
    const field = spec
      ? (['secret', 'secretEnv', 'publicKeyFile'] as const).find((f) => spec[f] !== undefined)
      : undefined;
    const path = inner === '' ? 'auth.jwt' : `auth.jwt.${field ? `keys[${keyIndex}].${field}` : inner}`;
    throw new ConfigError(`${path} (from ${from}): ${reason}`, { data: { path, from } });
  }
}

/** The configuration as printed by `agentbus serve --print-config`: key material replaced. */
export function redactedConfig(config: AgentbusConfig): AgentbusConfig {
  if (!config.auth) return config;
  const keys = config.auth.jwt.keys.map((k) => (k.secret === undefined ? k : { ...k, secret: '[redacted]' }));
  return { ...config, auth: { jwt: { ...config.auth.jwt, keys } } };
}
