import { generateKeyPairSync } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError } from '@agentbus/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { coerceScalar, envLayer, mergeLayers, objectLayer, originOf } from '../src/config/config-layers.js';
import { CONFIG_DEFAULTS } from '../src/config/config-types.js';
import { gatewayAuthOf, redactedConfig } from '../src/config/gateway-auth-config.js';
import { type LoadConfigInput, loadConfig } from '../src/config/load-config.js';
import { createStyle, type Output } from '../src/output.js';

let dir: string;
let n = 0;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'agentbus-config-test-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A fresh working directory, optionally holding `agentbus.yaml` with `yaml`. */
function workdir(yaml?: string): string {
  const cwd = join(dir, `w${n++}`);
  mkdirSync(cwd);
  if (yaml !== undefined) writeFileSync(join(cwd, 'agentbus.yaml'), yaml);
  return cwd;
}

function load(input: LoadConfigInput) {
  return loadConfig({ env: {}, ...input }).config;
}

/** The ConfigError `fn` throws. */
function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

const quiet: Output = { line: () => {}, note: () => {}, style: createStyle(false) };

describe('configuration precedence', () => {
  it('is the defaults when there is no file, variable or flag', () => {
    const config = load({ cwd: workdir() });
    expect(config).toMatchObject({
      transport: 'sqlite:./.agentbus/bus.db',
      host: '127.0.0.1',
      port: 8080,
      logLevel: 'info',
      dashboard: true,
      groups: [],
      ws: CONFIG_DEFAULTS.ws,
    });
    expect(config.auth).toBeUndefined();
  });

  it('reads ./agentbus.yaml when present; the environment overrides it; flags override both', () => {
    const cwd = workdir('port: 9000\nhost: 0.0.0.0\nlogLevel: debug\nws:\n  maxFrameBytes: 1000\n  rateBurst: 10\n');
    expect(load({ cwd })).toMatchObject({ port: 9000, host: '0.0.0.0', logLevel: 'debug' });
    const env = { AGENTBUS_PORT: '9100', AGENTBUS_WS_MAX_FRAME_BYTES: '2000', AGENTBUS_LOG_LEVEL: 'warn' };
    const withEnv = load({ cwd, env });
    expect(withEnv).toMatchObject({ port: 9100, host: '0.0.0.0', logLevel: 'warn' });
    // Objects merge field by field: the file's rateBurst survives the variable's maxFrameBytes.
    expect(withEnv.ws).toMatchObject({ maxFrameBytes: 2000, rateBurst: 10 });
    const withFlags = load({ cwd, env, flags: { port: '0', logLevel: 'error', transport: 'memory:' } });
    expect(withFlags).toMatchObject({ port: 0, logLevel: 'error', transport: 'memory:', host: '0.0.0.0' });
  });

  it('takes --config over $AGENTBUS_CONFIG over ./agentbus.yaml', () => {
    const cwd = workdir('port: 1\n');
    writeFileSync(join(cwd, 'env.yaml'), 'port: 2\n');
    writeFileSync(join(cwd, 'flag.yaml'), 'port: 3\n');
    expect(load({ cwd }).port).toBe(1);
    expect(load({ cwd, env: { AGENTBUS_CONFIG: 'env.yaml' } }).port).toBe(2);
    expect(load({ cwd, env: { AGENTBUS_CONFIG: 'env.yaml' }, flags: { config: 'flag.yaml' } }).port).toBe(3);
  });

  it('maps every documented variable, lists comma-separated and booleans as words', () => {
    const config = load({
      cwd: workdir(),
      env: {
        AGENTBUS_TRANSPORT: 'memory:',
        AGENTBUS_HOST: '::1',
        AGENTBUS_MAX_BODY_BYTES: '10',
        AGENTBUS_MAX_REQUEST_TIMEOUT_MS: '20',
        AGENTBUS_DRAIN_TIMEOUT_MS: '30',
        AGENTBUS_GROUPS: 'billing, shipping',
        AGENTBUS_DASHBOARD: 'false',
        AGENTBUS_REDIS_KEY_PREFIX: 'tenant-a',
        AGENTBUS_WS_SEND_BUFFER_BYTES: '40',
        AGENTBUS_WS_ALLOWED_ORIGINS: 'https://a.example,https://b.example',
        AGENTBUS_WS_RATE_PER_SECOND: '50',
        AGENTBUS_WS_RATE_BURST: '60',
        AGENTBUS_WS_COMPRESSION: 'on',
      },
    });
    expect(config).toMatchObject({
      transport: 'memory:',
      host: '::1',
      maxBodyBytes: 10,
      maxRequestTimeoutMs: 20,
      drainTimeoutMs: 30,
      groups: ['billing', 'shipping'],
      dashboard: false,
      redis: { keyPrefix: 'tenant-a' },
      ws: {
        sendBufferBytes: 40,
        allowedOrigins: ['https://a.example', 'https://b.example'],
        ratePerSecond: 50,
        rateBurst: 60,
        compression: true,
      },
    });
  });

  it('treats an empty variable as unset', () => {
    expect(load({ cwd: workdir(), env: { AGENTBUS_PORT: '', AGENTBUS_CONFIG: '' } }).port).toBe(8080);
  });
});

describe('configuration errors name the field and where the value came from', () => {
  it.each([
    ['ws:\n  maxFrameBytes: big\n', 'ws.maxFrameBytes (from agentbus.yaml): must be a positive integer, got "big"'],
    ['port: 70000\n', 'port (from agentbus.yaml): must be an integer 0–65535, got 70000'],
    ['port: -1\n', 'port (from agentbus.yaml): must be an integer 0–65535, got -1'],
    ['host: ""\n', 'host (from agentbus.yaml): must be a non-empty string, got ""'],
    [
      'logLevel: loud\n',
      'logLevel (from agentbus.yaml): must be one of trace, debug, info, warn, error, fatal, silent',
    ],
    ['dashboard: maybe\n', 'dashboard (from agentbus.yaml): must be true or false, got "maybe"'],
    ['groups: billing\n', 'groups (from agentbus.yaml): must be a list of strings, got "billing"'],
    ['groups: [a, 3]\n', 'groups[1] (from agentbus.yaml): must be a non-empty string, got 3'],
    ['ws: 5\n', 'ws (from agentbus.yaml): must be a mapping, got 5'],
    ['ws:\n  frameBytes: 5\n', 'ws.frameBytes (from agentbus.yaml): unknown setting; known here: maxFrameBytes'],
    ['wss: {}\n', 'wss (from agentbus.yaml): unknown setting'],
    ['drainTimeoutMs: 0\n', 'drainTimeoutMs (from agentbus.yaml): must be a positive integer, got 0'],
    ['transport: kafka://x\n', "transport (from agentbus.yaml): unsupported transport URL 'kafka://x'"],
    ['redis:\n  keyPrefix: 5\n', 'redis.keyPrefix (from agentbus.yaml): must be a non-empty string, got 5'],
    ['policy:\n  roles: {}\n', 'policy (from agentbus.yaml): needs auth'],
  ])('%j', (yaml, message) => {
    const err = configError(() => load({ cwd: workdir(yaml) }));
    expect(err.message).toContain(message);
    expect(err.code).toBe('CONFIG');
  });

  it.each([
    ['AGENTBUS_PORT', 'http', 'port (from AGENTBUS_PORT): must be an integer 0–65535, got "http"'],
    ['AGENTBUS_WS_MAX_FRAME_BYTES', 'big', 'ws.maxFrameBytes (from AGENTBUS_WS_MAX_FRAME_BYTES): must be a positive'],
    ['AGENTBUS_DASHBOARD', 'sometimes', 'dashboard (from AGENTBUS_DASHBOARD): must be true or false'],
    ['AGENTBUS_LOG_LEVEL', 'loud', 'logLevel (from AGENTBUS_LOG_LEVEL): must be one of'],
    ['AGENTBUS_TRANSPORT', 'sqlite:', 'transport (from AGENTBUS_TRANSPORT):'],
  ])('%s=%s', (name, value, message) => {
    const err = configError(() => load({ cwd: workdir(), env: { [name]: value } }));
    expect(err.message).toContain(message);
  });

  it('names the flag for a bad flag value, even over a good file value', () => {
    const err = configError(() => load({ cwd: workdir('port: 9000\n'), flags: { port: '80a' } }));
    expect(err.message).toBe('port (from --port): must be an integer 0–65535, got "80a"');
    expect(err.data).toMatchObject({ path: 'port', from: '--port' });
  });

  it('names the file given by --config or $AGENTBUS_CONFIG, and says when it is missing', () => {
    const cwd = workdir();
    writeFileSync(join(cwd, 'other.yaml'), 'port: x\n');
    expect(configError(() => load({ cwd, flags: { config: 'other.yaml' } })).message).toMatch(
      /^port \(from other\.yaml\)/,
    );
    expect(configError(() => load({ cwd, env: { AGENTBUS_CONFIG: 'missing.yaml' } })).message).toBe(
      'configuration file missing.yaml (from AGENTBUS_CONFIG) does not exist',
    );
  });

  it('reports invalid YAML with its line and column but without quoting the line', () => {
    const err = configError(() => load({ cwd: workdir('port: 1\nauth: [\n  secret: hunter2\n') }));
    expect(err.message).toMatch(/^configuration file agentbus\.yaml: invalid YAML at line \d+, column \d+ \(\w+\)$/);
    expect(err.message).not.toContain('hunter2');
  });

  it('refuses a file that is not a mapping', () => {
    expect(configError(() => load({ cwd: workdir('- a\n- b\n') })).message).toContain('must be a mapping of settings');
  });
});

const JWT = (key: string) =>
  `auth:\n  jwt:\n    issuer: https://issuer.example\n    audience: agentbus\n    keys:\n${key}`;

describe('auth and policy', () => {
  it('validates the key specs without ever showing a secret', () => {
    const cases: [string, string][] = [
      ['      - alg: HS256\n', 'auth.jwt.keys[0] (from agentbus.yaml): needs exactly one of secret, secretEnv'],
      [
        '      - alg: HS256\n        secret: hunter2\n        secretEnv: X\n',
        'auth.jwt.keys[0] (from agentbus.yaml): needs exactly one of secret, secretEnv, publicKeyFile, got secret and secretEnv',
      ],
      [
        '      - alg: none\n        secret: hunter2\n',
        'auth.jwt.keys[0].alg (from agentbus.yaml): must be one of HS256',
      ],
      [
        '      - alg: RS256\n        secret: hunter2\n',
        'auth.jwt.keys[0].secret (from agentbus.yaml): RS256 needs a public key',
      ],
      [
        '      - alg: HS256\n        secret: 12345\n',
        'auth.jwt.keys[0].secret (from agentbus.yaml): must be a non-empty string',
      ],
      [
        '      - alg: HS256\n        secretEnv: "not a name"\n',
        'auth.jwt.keys[0].secretEnv (from agentbus.yaml): must be the name',
      ],
      [
        '      - alg: HS256\n        secret: x\n        pem: y\n',
        'auth.jwt.keys[0].pem (from agentbus.yaml): unknown setting',
      ],
    ];
    for (const [key, message] of cases) {
      const err = configError(() => load({ cwd: workdir(JWT(key)) }));
      expect(err.message).toContain(message);
      expect(err.message).not.toMatch(/hunter2|12345/);
    }
    expect(configError(() => load({ cwd: workdir(JWT('      []\n')) })).message).toContain(
      'auth.jwt.keys (from agentbus.yaml): must be a non-empty list of keys',
    );
    expect(configError(() => load({ cwd: workdir('auth: {}\n') })).message).toContain(
      'auth.jwt (from agentbus.yaml): is required',
    );
  });

  it('checks the policy with the core rules, naming the path under policy', () => {
    const yaml = `${JWT('      - alg: HS256\n        secret: s\n')}policy:\n  roles:\n    agent:\n      inherits: [ghost]\n`;
    const err = configError(() => load({ cwd: workdir(yaml) }));
    expect(err.message).toMatch(/^policy\.roles\.agent\.inherits.* \(from agentbus\.yaml\): /);
  });

  it('builds the verifier from secretEnv and a public key file relative to the config file', async () => {
    const cwd = workdir();
    const { publicKey } = generateKeyPairSync('ed25519');
    mkdirSync(join(cwd, 'keys'));
    writeFileSync(join(cwd, 'keys', 'pub.pem'), publicKey.export({ type: 'spki', format: 'pem' }));
    writeFileSync(
      join(cwd, 'conf.yaml'),
      `${JWT(
        '      - kid: a\n        alg: HS256\n        secretEnv: GW_SECRET\n      - kid: b\n        alg: EdDSA\n        publicKeyFile: keys/pub.pem\n',
      )}policy:\n  roles:\n    agent:\n      rules:\n        - actions: publish\n          patterns: tasks.>\n`,
    );
    const { config } = loadConfig({ cwd: join(dir), env: {}, flags: { config: join(cwd, 'conf.yaml') } });
    expect(config.auth?.jwt.keys[1]?.publicKeyFile).toBe(join(cwd, 'keys', 'pub.pem'));
    const auth = await gatewayAuthOf(config, 'conf.yaml', quiet, { GW_SECRET: 'a-shared-secret-of-at-least-32-bytes' });
    expect(auth?.verifier).toBeDefined();
    expect(auth?.policy?.check({ subject: 's', roles: ['agent'] }, 'publish', 'tasks.a')).toBe(true);

    const unset = await gatewayAuthOf(config, 'conf.yaml', quiet, {}).catch((e: unknown) => e);
    expect(unset).toBeInstanceOf(ConfigError);
    expect((unset as Error).message).toBe(
      'auth.jwt.keys[0].secretEnv (from conf.yaml): environment variable GW_SECRET is not set',
    );
  });

  it('restates the verifier’s own errors under auth.jwt', async () => {
    const secret = 'a-shared-secret-of-at-least-32-bytes';
    const yaml = JWT(`      - alg: HS256\n        secret: ${secret}\n`).concat('    algorithms: [HS256, HS512]\n');
    const { config } = loadConfig({ cwd: workdir(yaml), env: {} });
    const err = await gatewayAuthOf(config, 'agentbus.yaml', quiet, {}).catch((e: unknown) => e);
    expect((err as Error).message).toBe('auth.jwt.algorithms (from agentbus.yaml): HS512 is listed but no key uses it');
    const short = loadConfig({ cwd: workdir(JWT('      - alg: HS256\n        secretEnv: S\n')), env: {} }).config;
    const weak = await gatewayAuthOf(short, 'agentbus.yaml', quiet, { S: 'hunter2' }).catch((e: unknown) => e);
    expect((weak as Error).message).toMatch(/^auth\.jwt\.keys\[0\]\.secretEnv \(from agentbus\.yaml\): .*32 bytes/);
    expect((weak as Error).message).not.toContain('hunter2');
  });

  it('redacts inline secrets for --print-config', () => {
    const { config } = loadConfig({ cwd: workdir(JWT('      - alg: HS256\n        secret: hunter2\n')), env: {} });
    expect(JSON.stringify(redactedConfig(config))).not.toContain('hunter2');
    expect(redactedConfig(config).auth?.jwt.keys[0]?.secret).toBe('[redacted]');
  });
});

describe('layers', () => {
  it('coerces scalars by kind, keeping what does not parse', () => {
    expect(coerceScalar('42', 'int')).toBe(42);
    expect(coerceScalar('4.2', 'int')).toBe('4.2');
    expect(coerceScalar('No', 'bool')).toBe(false);
    expect(coerceScalar('a, b,c', 'list')).toEqual(['a', 'b', 'c']);
    expect(coerceScalar('', 'list')).toEqual([]);
  });

  it('tracks origins through merges and finds the nearest one for a nested path', () => {
    const file = objectLayer({ ws: { maxFrameBytes: 1, rateBurst: 2 }, auth: { jwt: { keys: [{}] } } }, 'f.yaml');
    const merged = mergeLayers([file, envLayer({ AGENTBUS_WS_RATE_BURST: '3' })]);
    expect(originOf(merged.origins, 'ws.maxFrameBytes')).toBe('f.yaml');
    expect(originOf(merged.origins, 'ws.rateBurst')).toBe('AGENTBUS_WS_RATE_BURST');
    expect(originOf(merged.origins, 'auth.jwt.keys[0].alg')).toBe('f.yaml');
    expect(originOf(merged.origins, 'auth.jwt')).toBe('f.yaml');
    expect(originOf(merged.origins, 'port')).toBe('default');
  });
});
