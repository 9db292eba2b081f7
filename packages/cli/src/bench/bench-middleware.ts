import { generateKeyPairSync, randomBytes } from 'node:crypto';
import {
  ConfigError,
  createSchemaRegistry,
  dedup,
  Keyring,
  type Middleware,
  memoryIdempotencyStore,
  memorySequenceStore,
  retryPolicy,
  type Sequencing,
  type SigningKeySpec,
  schemaValidation,
  sequencing,
  signer,
  verifier,
} from '@agentbus/core';

/**
 * The middleware a benchmark run can put on the agentbus side (`--middleware`): the reliability
 * stack, and the security one (signing with HMAC-SHA256 or Ed25519, schema validation).
 */
export type BenchMiddleware = 'retry' | 'dedup' | 'sequencing' | 'sign-hmac' | 'sign-ed25519' | 'schema';

/** Every benchmark middleware, in the order the bus runs them (outermost first). */
export const BENCH_MIDDLEWARE: readonly BenchMiddleware[] = Object.freeze([
  'sign-hmac',
  'sign-ed25519',
  'retry',
  'schema',
  'sequencing',
  'dedup',
]);

/** What `--middleware` takes besides the names: a name for a set of them. */
const ALIASES: Readonly<Record<string, readonly BenchMiddleware[]>> = Object.freeze({
  stack: ['retry', 'sequencing', 'dedup'],
  'security-hmac': ['sign-hmac', 'schema'],
  'security-ed25519': ['sign-ed25519', 'schema'],
});

const NAMES_TEXT =
  'retry, dedup, sequencing, sign-hmac, sign-ed25519 and schema (or stack, security-hmac, security-ed25519)';

/** The type benchmark messages are published with when `schema` is on (its schema is registered). */
export const BENCH_MESSAGE_TYPE = 'agentbus.bench.payload';

/**
 * Parses `--middleware`: a comma-separated list of names or aliases (`stack` for retry, dedup and
 * sequencing; `security-hmac` / `security-ed25519` for signing and schema validation). Returns
 * them in the order the bus runs them; throws ConfigError naming `bench.middleware` for anything
 * else, and for both signing algorithms at once.
 */
export function parseBenchMiddleware(text: string): BenchMiddleware[] {
  const names = text
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  if (names.length === 0) throw new ConfigError('name at least one middleware', { path: 'bench.middleware' });
  const wanted = new Set<string>();
  for (const name of names) {
    const alias = ALIASES[name];
    if (alias) for (const m of alias) wanted.add(m);
    else wanted.add(name);
  }
  return validBenchMiddleware([...wanted]);
}

/** `list` in run order without repeats; throws ConfigError for a name that is no benchmark middleware. */
export function validBenchMiddleware(list: readonly unknown[]): BenchMiddleware[] {
  for (const name of list) {
    if (!BENCH_MIDDLEWARE.includes(name as BenchMiddleware)) {
      throw new ConfigError(`must be a list of ${NAMES_TEXT}, got ${String(name)}`, {
        path: 'bench.middleware',
      });
    }
  }
  if (list.includes('sign-hmac') && list.includes('sign-ed25519')) {
    throw new ConfigError('sign with one algorithm: sign-hmac or sign-ed25519', { path: 'bench.middleware' });
  }
  return BENCH_MIDDLEWARE.filter((m) => list.includes(m));
}

/** The middleware of one agentbus subject, and how to stop what it runs in the background. */
export interface BenchMiddlewareStack {
  readonly middleware: readonly Middleware[];
  close(): void;
}

/** A keyring with one fresh key of `algorithm` that signs and verifies. */
function benchKeyring(algorithm: 'hmac-sha256' | 'ed25519'): Keyring {
  const spec: SigningKeySpec =
    algorithm === 'hmac-sha256'
      ? { kid: 'bench', algorithm, secret: randomBytes(32) }
      : { kid: 'bench', algorithm, privateKey: generateKeyPairSync('ed25519').privateKey };
  return new Keyring({ keys: [spec], active: 'bench' });
}

/** The schema of the benchmark payload (`{ t, pad }`), as a strict contract. */
const BENCH_PAYLOAD_SCHEMA = Object.freeze({
  type: 'object',
  properties: { t: { type: 'number' }, pad: { type: 'string' } },
  required: ['t', 'pad'],
  additionalProperties: false,
});

/**
 * Fresh instances of `names` on in-process stores, in the order the chaos test stacks them:
 * `retryPolicy()`, then `sequencing` (ordering), then `dedup` inside it (de-duplicating). Signing
 * goes around everything as its two halves: the verifier first on consume (nothing acts on an
 * unverified message), the signer last on publish (after sequencing numbered the envelope and
 * schema validation stamped its version). Schema validation checks every payload against
 * {@link BENCH_MESSAGE_TYPE}'s schema on publish and on consume.
 */
export function benchMiddlewareStack(names: readonly BenchMiddleware[]): BenchMiddlewareStack {
  const middleware: Middleware[] = [];
  let seq: Sequencing | undefined;
  let sign: Middleware | undefined;
  for (const name of validBenchMiddleware(names)) {
    if (name === 'sign-hmac' || name === 'sign-ed25519') {
      const keyring = benchKeyring(name === 'sign-hmac' ? 'hmac-sha256' : 'ed25519');
      middleware.push(verifier({ keyring }));
      sign = signer({ keyring });
    } else if (name === 'retry') middleware.push(retryPolicy());
    else if (name === 'schema') {
      const registry = createSchemaRegistry();
      registry.register({ type: BENCH_MESSAGE_TYPE, version: 1, schema: BENCH_PAYLOAD_SCHEMA });
      middleware.push(schemaValidation({ registry, requireSchema: true }));
    } else if (name === 'sequencing') {
      seq = sequencing({ store: memorySequenceStore() });
      middleware.push(seq);
    } else middleware.push(dedup({ store: memoryIdempotencyStore() }));
  }
  if (sign) middleware.push(sign);
  return { middleware, close: () => seq?.close() };
}
