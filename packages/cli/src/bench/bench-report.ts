import { renderTable, type Style } from '../output.js';
import type { BenchOptions } from './bench-options.js';
import type { SubjectResult } from './phases.js';
import { RAW_AMQP_DEFAULTS } from './raw-amqp-subject.js';
import type { RawNatsRetention } from './raw-nats-subject.js';
import type { RedisPeerResults } from './redis-peers.js';

/**
 * The result of one run; the JSON line `--json` prints. Field names are a contract with
 * scripts and CI (DESIGN §7): add fields, never rename them.
 */
export interface BenchReport {
  readonly transport: string;
  readonly messages: number;
  readonly size: number;
  readonly codec: string;
  readonly consumers: number;
  readonly concurrency: number;
  /** Deliveries each agentbus consumer leased ahead. */
  readonly prefetch: number;
  readonly batch: number;
  readonly publish_per_s: number;
  readonly drain_per_s: number;
  readonly e2e_per_s: number;
  /** Offered rate and message count of the latency phase. */
  readonly latency_rate_per_s: number;
  readonly latency_messages: number;
  readonly p50_ms: number;
  readonly p95_ms: number;
  readonly p99_ms: number;
  readonly peak_rss_mb: number;
  /** What the raw baseline is: `raw array queue`, `raw better-sqlite3`, `raw ioredis`, `raw amqplib`, `raw nats.js`, … */
  readonly raw: string;
  readonly raw_publish_per_s: number;
  readonly raw_drain_per_s: number;
  readonly raw_e2e_per_s: number;
  readonly raw_p50_ms: number;
  readonly raw_p95_ms: number;
  readonly raw_p99_ms: number;
  /** Measured after the agentbus phases in the same process, so it includes what they left. */
  readonly raw_peak_rss_mb: number;
  /** `e2e_per_s / raw_e2e_per_s`. */
  readonly ratio: number;
  readonly node: string;
  readonly platform: string;
  // Only on redis:// runs, which measure both raw clients (`raw` is the faster by
  // end-to-end throughput) and BullMQ, all at the same offered latency rate as agentbus.
  /** `ioredis` or `node-redis`: the raw client the `raw_*` fields and `ratio` are of. */
  readonly raw_client?: string;
  readonly raw_ioredis_publish_per_s?: number;
  readonly raw_ioredis_e2e_per_s?: number;
  readonly raw_ioredis_p99_ms?: number;
  readonly raw_node_redis_publish_per_s?: number;
  readonly raw_node_redis_e2e_per_s?: number;
  readonly raw_node_redis_p99_ms?: number;
  readonly bullmq_publish_per_s?: number;
  readonly bullmq_drain_per_s?: number;
  readonly bullmq_e2e_per_s?: number;
  readonly bullmq_p50_ms?: number;
  readonly bullmq_p95_ms?: number;
  readonly bullmq_p99_ms?: number;
  /** Measured after agentbus and both raw clients in the same process. */
  readonly bullmq_peak_rss_mb?: number;
  /** `e2e_per_s / bullmq_e2e_per_s`. */
  readonly bullmq_ratio?: number;
  // Only on amqp:// runs, whose raw baseline is amqplib on the same broker.
  /** `quorum` or `classic`: the queue type of agentbus's group queues and of the raw queues. */
  readonly queue_type?: string;
  /**
   * `basic.qos` of each raw amqplib consumer's channel; on nats:// runs the `max_messages` each
   * raw `consume()` pulls ahead.
   */
  readonly raw_prefetch?: number;
  // Only on nats:// runs, whose raw baseline is nats.js JetStream on the same server.
  /** `interest` or `limits`: the retention of the raw baseline's file stream. */
  readonly raw_retention?: string;
  /** The raw baseline's `js.publish` requests in flight at most (each waits for its PubAck). */
  readonly raw_publish_window?: number;
  // Only on runs with `--middleware`: the agentbus figures above are with it, and the bare bus
  // (no middleware, the same messages on a transport of its own of the same kind) is beside them.
  /** The middleware on the agentbus side, in the order they run, e.g. `retry,sequencing,dedup`. */
  readonly middleware?: string;
  /** Workflows each phase's messages are spread over (`workflowid`, round-robin). */
  readonly workflows?: number;
  /** End-to-end rounds of each bus, the two taking turns (`e2e_per_s` and `bare_e2e_per_s` are the first). */
  readonly rounds?: number;
  /** The median end-to-end throughput over the rounds with middleware. */
  readonly middleware_e2e_per_s?: number;
  readonly bare_publish_per_s?: number;
  readonly bare_drain_per_s?: number;
  /** The median end-to-end throughput over the rounds of the bare bus. */
  readonly bare_e2e_per_s?: number;
  readonly bare_p50_ms?: number;
  readonly bare_p95_ms?: number;
  readonly bare_p99_ms?: number;
  /** Measured after the middleware phases in the same process. */
  readonly bare_peak_rss_mb?: number;
  /** `middleware_e2e_per_s / bare_e2e_per_s`. */
  readonly middleware_ratio?: number;
  /** Each round's end-to-end throughput with middleware, in order. */
  readonly middleware_e2e_rounds_per_s?: readonly number[];
  readonly bare_e2e_rounds_per_s?: readonly number[];
}

/** The bare bus's figures beside agentbus with middleware. */
export interface BareComparison {
  readonly bare: SubjectResult;
  /** End-to-end msg/s per round, in order; the first is each one's end-to-end phase. */
  readonly rounds: { readonly middleware: readonly number[]; readonly bare: readonly number[] };
}

/** How the raw JetStream baseline of a nats:// run was set up. */
export interface RawNatsSetup {
  readonly retention: RawNatsRetention;
  readonly publishWindow: number;
  readonly maxMessages: number;
}

const round = (n: number, digits = 0) => {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
};

/**
 * Builds the report from the measured subjects; `redis` (redis:// runs) adds both raw clients
 * and BullMQ, and then `raw` must be the result of `redis.rawClient`; `nats` (nats:// runs) says
 * how the raw JetStream baseline was set up.
 */
export function benchReport(
  o: BenchOptions,
  prefetch: number,
  bus: SubjectResult,
  raw: SubjectResult,
  redis?: RedisPeerResults,
  nats?: RawNatsSetup,
): BenchReport {
  return {
    transport: o.transport,
    messages: o.messages,
    size: o.size,
    codec: o.codec,
    consumers: o.consumers,
    concurrency: o.concurrency,
    prefetch,
    batch: o.batchSize,
    publish_per_s: round(bus.publishPerS),
    drain_per_s: round(bus.drainPerS),
    e2e_per_s: round(bus.e2ePerS),
    latency_rate_per_s: round(bus.latency.ratePerS),
    latency_messages: bus.latency.messages,
    p50_ms: round(bus.latency.p50Ms, 3),
    p95_ms: round(bus.latency.p95Ms, 3),
    p99_ms: round(bus.latency.p99Ms, 3),
    peak_rss_mb: round(bus.peakRssMb, 1),
    raw: raw.label,
    raw_publish_per_s: round(raw.publishPerS),
    raw_drain_per_s: round(raw.drainPerS),
    raw_e2e_per_s: round(raw.e2ePerS),
    raw_p50_ms: round(raw.latency.p50Ms, 3),
    raw_p95_ms: round(raw.latency.p95Ms, 3),
    raw_p99_ms: round(raw.latency.p99Ms, 3),
    raw_peak_rss_mb: round(raw.peakRssMb, 1),
    ratio: round(bus.e2ePerS / raw.e2ePerS, 3),
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
    ...(redis && redisFields(bus, redis)),
    ...(o.queueType !== undefined && { queue_type: o.queueType, raw_prefetch: RAW_AMQP_DEFAULTS.prefetch }),
    ...(nats && {
      raw_prefetch: nats.maxMessages,
      raw_retention: nats.retention,
      raw_publish_window: nats.publishWindow,
    }),
  };
}

function redisFields(bus: SubjectResult, redis: RedisPeerResults) {
  const { ioredis, 'node-redis': nodeRedis } = redis.rawByClient;
  const { bullmq } = redis;
  return {
    raw_client: redis.rawClient,
    raw_ioredis_publish_per_s: round(ioredis.publishPerS),
    raw_ioredis_e2e_per_s: round(ioredis.e2ePerS),
    raw_ioredis_p99_ms: round(ioredis.latency.p99Ms, 3),
    raw_node_redis_publish_per_s: round(nodeRedis.publishPerS),
    raw_node_redis_e2e_per_s: round(nodeRedis.e2ePerS),
    raw_node_redis_p99_ms: round(nodeRedis.latency.p99Ms, 3),
    bullmq_publish_per_s: round(bullmq.publishPerS),
    bullmq_drain_per_s: round(bullmq.drainPerS),
    bullmq_e2e_per_s: round(bullmq.e2ePerS),
    bullmq_p50_ms: round(bullmq.latency.p50Ms, 3),
    bullmq_p95_ms: round(bullmq.latency.p95Ms, 3),
    bullmq_p99_ms: round(bullmq.latency.p99Ms, 3),
    bullmq_peak_rss_mb: round(bullmq.peakRssMb, 1),
    bullmq_ratio: round(bus.e2ePerS / bullmq.e2ePerS, 3),
  } satisfies Partial<BenchReport>;
}

/** The median of `values` (the mean of the middle two for an even count). */
export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1
    ? (sorted[mid] as number)
    : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

/** The fields of a run with middleware: agentbus measured with `o.middleware` beside the bare bus. */
export function middlewareFields(o: BenchOptions, vs: BareComparison) {
  const { bare, rounds } = vs;
  const withMiddleware = median(rounds.middleware);
  const without = median(rounds.bare);
  return {
    middleware: o.middleware.join(','),
    workflows: o.workflows,
    rounds: rounds.middleware.length,
    middleware_e2e_per_s: round(withMiddleware),
    bare_publish_per_s: round(bare.publishPerS),
    bare_drain_per_s: round(bare.drainPerS),
    bare_e2e_per_s: round(without),
    bare_p50_ms: round(bare.latency.p50Ms, 3),
    bare_p95_ms: round(bare.latency.p95Ms, 3),
    bare_p99_ms: round(bare.latency.p99Ms, 3),
    bare_peak_rss_mb: round(bare.peakRssMb, 1),
    middleware_ratio: round(withMiddleware / without, 3),
    middleware_e2e_rounds_per_s: rounds.middleware.map((n) => round(n)),
    bare_e2e_rounds_per_s: rounds.bare.map((n) => round(n)),
  } satisfies Partial<BenchReport>;
}

const int = (n: number) => Math.round(n).toLocaleString('en-US');
const ms = (n: number) => n.toFixed(3);
const ratio = (a: number, b: number) => (b > 0 ? (a / b).toFixed(2) : '-');

/** The human-readable table; with BullMQ figures (redis://) two more columns. */
export function benchTable(r: BenchReport, style: Style): string[] {
  const rows: string[][] = [
    ['publish msg/s', int(r.publish_per_s), int(r.raw_publish_per_s), ratio(r.publish_per_s, r.raw_publish_per_s)],
    ['drain msg/s', int(r.drain_per_s), int(r.raw_drain_per_s), ratio(r.drain_per_s, r.raw_drain_per_s)],
    ['end-to-end msg/s', style.bold(int(r.e2e_per_s)), int(r.raw_e2e_per_s), style.bold(r.ratio.toFixed(2))],
    ['latency p50 ms', ms(r.p50_ms), ms(r.raw_p50_ms), ''],
    ['latency p95 ms', ms(r.p95_ms), ms(r.raw_p95_ms), ''],
    ['latency p99 ms', ms(r.p99_ms), ms(r.raw_p99_ms), ''],
    ['peak RSS MB', r.peak_rss_mb.toFixed(1), r.raw_peak_rss_mb.toFixed(1), ''],
  ];
  const headers = ['', 'agentbus', 'raw', 'agentbus/raw'];
  const notes: string[] = [];
  const bare = bareColumns(r);
  if (bare) {
    rows.forEach((row, i) => {
      row.splice(2, 0, ...(bare[i] ?? ['', '']));
    });
    headers.splice(2, 0, 'bare bus', 'agentbus/bare');
    notes.push(
      `agentbus with middleware ${(r.middleware ?? '').replaceAll(',', ' + ')} (memory stores), messages spread over ` +
        `${int(r.workflows ?? 0)} workflows per phase; bare bus = the same messages without middleware, on a ` +
        'transport of its own of the same kind',
      `end to end, median of ${r.rounds ?? 1} rounds taking turns: with middleware ` +
        `${int(r.middleware_e2e_per_s ?? 0)} msg/s (${(r.middleware_e2e_rounds_per_s ?? []).map(int).join(', ')}), ` +
        `bare ${int(r.bare_e2e_per_s ?? 0)} msg/s (${(r.bare_e2e_rounds_per_s ?? []).map(int).join(', ')}): ` +
        style.bold(`middleware/bare ${(r.middleware_ratio ?? 0).toFixed(2)}`),
    );
  }
  const b = bullmqColumns(r);
  if (b) {
    rows.forEach((row, i) => {
      row.push(...(b[i] ?? ['', '']));
    });
    headers.push('BullMQ', 'agentbus/BullMQ');
  }
  if (r.raw_client && r.raw_ioredis_e2e_per_s !== undefined && r.raw_node_redis_e2e_per_s !== undefined) {
    notes.push(
      `raw = ${r.raw} (Redis Streams: pipelined XADD, XREADGROUP COUNT 500 + XACK), the faster end to end of ` +
        `ioredis ${int(r.raw_ioredis_e2e_per_s)} and node-redis ${int(r.raw_node_redis_e2e_per_s)} msg/s`,
    );
  }
  if (b) notes.push('BullMQ: addBulk, Workers with concurrency 100, no-op jobs removed on completion');
  if (r.queue_type !== undefined) {
    notes.push(
      `raw = ${r.raw} on ${r.queue_type} durable queues${r.queue_type === 'classic' ? ' (x-max-priority 9, as agentbus declares)' : ''}: persistent publishes through a topic exchange of its own (as agentbus routes) on a ` +
        `ConfirmChannel, each publish batch of ${r.batch} waiting for its own confirms (the same batches as ` +
        `agentbus); consumers on channels of their own with prefetch ${r.raw_prefetch ?? RAW_AMQP_DEFAULTS.prefetch}, ` +
        'one multiple ack per event-loop turn; publisher and consumers on connections of their own (TCP_NODELAY)',
      `agentbus on ${r.queue_type} queues` +
        (r.queue_type === 'classic' ? ' (with x-max-priority 9, so priorities are honoured)' : ''),
    );
  }
  if (r.raw_publish_window !== undefined) {
    notes.push(
      `raw = ${r.raw} JetStream on a file stream of its own (${r.raw_retention ?? 'interest'} retention, one replica), ` +
        `one durable pull consumer per phase (explicit acks): js.publish with at most ${r.raw_publish_window} ` +
        `publishes in flight, each waiting for its PubAck; consumers consume() with a callback, max_messages ` +
        `${r.raw_prefetch ?? ''}, msg.ack() per message; publisher and consumers on connections of their own ` +
        '(noAsyncTraces: no stack captured per request)',
    );
  }
  return [
    style.bold(
      `agentbus bench  ${r.transport}${bare ? `  with ${r.middleware}` : ''}  vs ${bare ? 'the bare bus, ' : ''}${r.raw}${b ? ' and BullMQ' : ''}`,
    ),
    `${int(r.messages)} messages x ${int(r.size)} B (${r.codec}), ${r.consumers} consumers x ${r.concurrency} in flight ` +
      `(prefetch ${int(r.prefetch)}), ` +
      `publish batches of ${r.batch}; latency at ${int(r.latency_rate_per_s)} msg/s offered (${int(r.latency_messages)} messages)`,
    ...notes,
    '',
    ...renderTable(
      headers,
      rows,
      headers.map((_, i) => (i === 0 ? 'left' : 'right')),
    ),
    '',
    style.dim(
      `${r.node} ${r.platform}; ${bare ? 'bare bus, ' : ''}raw${b ? ' and BullMQ' : ''} peak RSS is measured after the agentbus phases in the same process`,
    ),
  ];
}

/** The bare bus's cells per row of the table, or undefined when the run had no middleware. */
function bareColumns(r: BenchReport): string[][] | undefined {
  const {
    bare_publish_per_s: publish,
    bare_drain_per_s: drain,
    bare_p50_ms: p50,
    bare_p95_ms: p95,
    bare_p99_ms: p99,
    bare_peak_rss_mb: rss,
  } = r;
  // The end-to-end phase's figure, as in the agentbus column (the medians are in a note).
  const e2e = r.bare_e2e_rounds_per_s?.[0];
  if (publish === undefined || drain === undefined || e2e === undefined) return undefined;
  if (p50 === undefined || p95 === undefined || p99 === undefined || rss === undefined) return undefined;
  return [
    [int(publish), ratio(r.publish_per_s, publish)],
    [int(drain), ratio(r.drain_per_s, drain)],
    [int(e2e), ratio(r.e2e_per_s, e2e)],
    [ms(p50), ''],
    [ms(p95), ''],
    [ms(p99), ''],
    [rss.toFixed(1), ''],
  ];
}

/** BullMQ's cells per row of the table, or undefined when the run measured no BullMQ. */
function bullmqColumns(r: BenchReport): string[][] | undefined {
  const {
    bullmq_publish_per_s: publish,
    bullmq_drain_per_s: drain,
    bullmq_e2e_per_s: e2e,
    bullmq_p50_ms: p50,
    bullmq_p95_ms: p95,
    bullmq_p99_ms: p99,
    bullmq_peak_rss_mb: rss,
    bullmq_ratio: e2eRatio,
  } = r;
  if (publish === undefined || drain === undefined || e2e === undefined || e2eRatio === undefined) return undefined;
  if (p50 === undefined || p95 === undefined || p99 === undefined || rss === undefined) return undefined;
  return [
    [int(publish), ratio(r.publish_per_s, publish)],
    [int(drain), ratio(r.drain_per_s, drain)],
    [int(e2e), e2eRatio.toFixed(2)],
    [ms(p50), ''],
    [ms(p95), ''],
    [ms(p99), ''],
    [rss.toFixed(1), ''],
  ];
}
