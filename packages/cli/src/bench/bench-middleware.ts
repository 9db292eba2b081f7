import {
  ConfigError,
  dedup,
  type Middleware,
  memoryIdempotencyStore,
  memorySequenceStore,
  retryPolicy,
  type Sequencing,
  sequencing,
} from '@agentbus/core';

/** The middleware a benchmark run can put on the agentbus side (`--middleware`). */
export type BenchMiddleware = 'retry' | 'dedup' | 'sequencing';

/** Every benchmark middleware, in the order the bus runs them (outermost first). */
export const BENCH_MIDDLEWARE: readonly BenchMiddleware[] = Object.freeze(['retry', 'sequencing', 'dedup']);

/**
 * Parses `--middleware`: a comma-separated list of `retry`, `dedup`, `sequencing`, or `stack` for
 * all three. Returns them in the order the bus runs them; throws ConfigError naming
 * `bench.middleware` for anything else.
 */
export function parseBenchMiddleware(text: string): BenchMiddleware[] {
  const names = text
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  if (names.length === 0) throw new ConfigError('name at least one middleware', { path: 'bench.middleware' });
  const wanted = new Set<string>();
  for (const name of names) {
    if (name === 'stack') for (const m of BENCH_MIDDLEWARE) wanted.add(m);
    else wanted.add(name);
  }
  return validBenchMiddleware([...wanted]);
}

/** `list` in run order without repeats; throws ConfigError for a name that is no benchmark middleware. */
export function validBenchMiddleware(list: readonly unknown[]): BenchMiddleware[] {
  for (const name of list) {
    if (!BENCH_MIDDLEWARE.includes(name as BenchMiddleware)) {
      throw new ConfigError(`must be a list of retry, dedup and sequencing (or stack), got ${String(name)}`, {
        path: 'bench.middleware',
      });
    }
  }
  return BENCH_MIDDLEWARE.filter((m) => list.includes(m));
}

/** The middleware of one agentbus subject, and how to stop what it runs in the background. */
export interface BenchMiddlewareStack {
  readonly middleware: readonly Middleware[];
  close(): void;
}

/**
 * Fresh instances of `names` on in-process stores, in the order the chaos test stacks them:
 * `retryPolicy()`, then `sequencing` (ordering), then `dedup` inside it (de-duplicating).
 */
export function benchMiddlewareStack(names: readonly BenchMiddleware[]): BenchMiddlewareStack {
  const middleware: Middleware[] = [];
  let seq: Sequencing | undefined;
  for (const name of validBenchMiddleware(names)) {
    if (name === 'retry') middleware.push(retryPolicy());
    else if (name === 'sequencing') {
      seq = sequencing({ store: memorySequenceStore() });
      middleware.push(seq);
    } else middleware.push(dedup({ store: memoryIdempotencyStore() }));
  }
  return { middleware, close: () => seq?.close() };
}
