import { ConfigError } from '@agentbus/core';
import { type BenchMiddleware, validBenchMiddleware } from './bench-middleware.js';

/** What one benchmark run measures and how. */
export interface BenchOptions {
  /**
   * `memory:`, `sqlite:…` (SQLite always runs on fresh temp files, never the named one) or
   * `redis://host:port[/db]` / `rediss://…` (on the named server, on keys of the run's own) or
   * `amqp://user:pass@host:port[/vhost]` / `amqps://…` (RabbitMQ, on queues of the run's own) or
   * `nats://host:port` (JetStream, on streams of the run's own).
   */
  readonly transport: string;
  /** Messages per phase (publish, drain, end-to-end). */
  readonly messages: number;
  /** Payload bytes per message. */
  readonly size: number;
  /** The bus codec: `json` (CloudEvents structured JSON, the default) or `msgpack`. */
  readonly codec: string;
  /** Competing consumers in one group. */
  readonly consumers: number;
  /** Messages each consumer's handlers run at once. */
  readonly concurrency: number;
  /**
   * Deliveries each agentbus consumer leases ahead (`subscribe({ prefetch })`); default: the raw
   * baseline's read batch, so both read alike (`concurrency` for memory and SQLite, whose raw
   * loops take that many rows at a time; 500 for Redis, as its XREADGROUP COUNT; 500 for
   * RabbitMQ, as the raw consumers' `basic.qos`).
   */
  readonly prefetch?: number | undefined;
  /**
   * amqp:// runs only: the queue type of agentbus's group queues and of the raw baseline's queues
   * (default `quorum`, the transport's default).
   */
  readonly queueType?: BenchQueueType | undefined;
  /** Messages per publish batch (one transport round / one transaction). */
  readonly batchSize: number;
  /** Publish batches in flight at once. */
  readonly inflightBatches: number;
  /** Offered rate for the latency phase (msg/s); default: `rateFraction` × agentbus end-to-end. */
  readonly rate?: number | undefined;
  readonly rateFraction: number;
  /** The latency phase offers load for about this long (bounded by `messages`). */
  readonly latencyDurationMs: number;
  /** End-to-end messages run through each system before measuring, so JIT warm-up is not timed. */
  readonly warmupMessages: number;
  /**
   * Middleware on the agentbus side (`retry`, `dedup`, `sequencing`; default none). With any, the
   * run also measures the bare bus (no middleware) on the same messages and transport kind.
   */
  readonly middleware: readonly BenchMiddleware[];
  /**
   * With middleware: messages carry a `workflowid`, spread round-robin over this many workflows per
   * phase (so sequencing numbers and orders them); the bare bus publishes the same.
   */
  readonly workflows: number;
  /**
   * With middleware: end-to-end rounds of each bus, the middleware one and the bare one taking
   * turns (the first round is each one's end-to-end phase); the medians are compared, so that a
   * burst of load from elsewhere on the machine, or the heap growing, skews a round rather than
   * the comparison.
   */
  readonly rounds: number;
  /** A phase slower than this fails (at least; large runs get 1 ms per message). */
  readonly phaseTimeoutMs: number;
  readonly rssSampleIntervalMs: number;
}

/** RabbitMQ queue types an amqp:// run can measure on. */
export type BenchQueueType = 'quorum' | 'classic';

/** Defaults of `agentbus bench` / `npm run bench`. */
export const BENCH_DEFAULTS = Object.freeze({
  transport: 'sqlite:',
  messages: 20_000,
  size: 1024,
  codec: 'json',
  consumers: 4,
  concurrency: 16,
  batchSize: 100,
  inflightBatches: 4,
  rateFraction: 0.5,
  latencyDurationMs: 2_000,
  warmupMessages: 2_000,
  middleware: Object.freeze([]) as readonly BenchMiddleware[],
  workflows: 100,
  rounds: 5,
  phaseTimeoutMs: 60_000,
  rssSampleIntervalMs: 20,
} satisfies Omit<BenchOptions, 'rate'>);

/** Fills in defaults and validates once; throws ConfigError naming the field. */
export function resolveBenchOptions(input: Partial<BenchOptions> = {}): BenchOptions {
  const o: BenchOptions = { ...BENCH_DEFAULTS, ...stripUndefined(input) };
  if (o.prefetch !== undefined && (!Number.isSafeInteger(o.prefetch) || o.prefetch < 1)) {
    throw new ConfigError(`must be a positive integer, got ${o.prefetch}`, { path: 'bench.prefetch' });
  }
  for (const key of [
    'messages',
    'consumers',
    'concurrency',
    'batchSize',
    'inflightBatches',
    'workflows',
    'rounds',
  ] as const) {
    if (!Number.isSafeInteger(o[key]) || o[key] < 1) {
      throw new ConfigError(`must be a positive integer, got ${o[key]}`, { path: `bench.${key}` });
    }
  }
  for (const key of ['size', 'warmupMessages'] as const) {
    if (!Number.isSafeInteger(o[key]) || o[key] < 0) {
      throw new ConfigError(`must be an integer >= 0, got ${o[key]}`, { path: `bench.${key}` });
    }
  }
  for (const key of ['rateFraction', 'latencyDurationMs', 'phaseTimeoutMs', 'rssSampleIntervalMs'] as const) {
    if (!(o[key] > 0)) throw new ConfigError(`must be > 0, got ${o[key]}`, { path: `bench.${key}` });
  }
  if (o.codec !== 'json' && o.codec !== 'msgpack')
    throw new ConfigError(`must be json or msgpack, got ${o.codec}`, { path: 'bench.codec' });
  if (o.queueType !== undefined && o.queueType !== 'quorum' && o.queueType !== 'classic') {
    throw new ConfigError(`must be quorum or classic, got ${String(o.queueType)}`, { path: 'bench.queueType' });
  }
  if (o.rate !== undefined && !(o.rate > 0))
    throw new ConfigError(`must be > 0, got ${o.rate}`, { path: 'bench.rate' });
  if (!Array.isArray(o.middleware)) {
    throw new ConfigError('must be a list of retry, dedup and sequencing', { path: 'bench.middleware' });
  }
  return { ...o, middleware: validBenchMiddleware(o.middleware) };
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
