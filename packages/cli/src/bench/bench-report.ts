import { renderTable, type Style } from '../output.js';
import type { BenchOptions } from './bench-options.js';
import type { SubjectResult } from './phases.js';

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
  /** What the raw baseline is: `raw array queue` or `raw better-sqlite3`. */
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
}

const round = (n: number, digits = 0) => {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
};

/** Builds the report from the two measured subjects. */
export function benchReport(o: BenchOptions, bus: SubjectResult, raw: SubjectResult): BenchReport {
  return {
    transport: o.transport,
    messages: o.messages,
    size: o.size,
    codec: o.codec,
    consumers: o.consumers,
    concurrency: o.concurrency,
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
  };
}

const int = (n: number) => Math.round(n).toLocaleString('en-US');
const ms = (n: number) => n.toFixed(3);
const ratio = (a: number, b: number) => (b > 0 ? (a / b).toFixed(2) : '-');

/** The human-readable table. */
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
  return [
    style.bold(`agentbus bench  ${r.transport}  vs ${r.raw}`),
    `${int(r.messages)} messages x ${int(r.size)} B (${r.codec}), ${r.consumers} consumers x ${r.concurrency} in flight, ` +
      `publish batches of ${r.batch}; latency at ${int(r.latency_rate_per_s)} msg/s offered (${int(r.latency_messages)} messages)`,
    '',
    ...renderTable(['', 'agentbus', 'raw', 'agentbus/raw'], rows, ['left', 'right', 'right', 'right']),
    '',
    style.dim(`${r.node} ${r.platform}; raw peak RSS is measured after the agentbus phases in the same process`),
  ];
}
