import type { BenchOptions } from './bench-options.js';
import type { BenchSubject } from './bench-subject.js';
import { Countdown, offerAtRate, pump, quantile, RssSampler } from './measure.js';

/** What the phases measured for one subject. */
export interface SubjectResult {
  readonly label: string;
  /** Publish only (the group exists, nobody consumes). */
  readonly publishPerS: number;
  /** Consume + ack only, from the backlog the publish phase left. */
  readonly drainPerS: number;
  /** Publish and consume at once: first publish to last handler. */
  readonly e2ePerS: number;
  readonly latency: LatencyResult;
  readonly peakRssMb: number;
}

/** Publish-to-handler latency at a fixed offered rate. */
export interface LatencyResult {
  /** Offered rate (msg/s) and number of messages. */
  readonly ratePerS: number;
  readonly messages: number;
  readonly p50Ms: number;
  readonly p95Ms: number;
  readonly p99Ms: number;
}

const perS = (count: number, ms: number) => (ms > 0 ? (count * 1000) / ms : Number.POSITIVE_INFINITY);

/** Runs every phase on `subject`; `latencyRate` picks the offered rate from its end-to-end throughput. */
export async function measureSubject(
  subject: BenchSubject,
  o: BenchOptions,
  latencyRate: (e2ePerS: number) => number,
  log: (text: string) => void,
  signal?: AbortSignal,
): Promise<SubjectResult> {
  const rss = new RssSampler().start(o.rssSampleIntervalMs);
  const timeoutMs = phaseTimeoutMs(o);
  const what = (phase: string) => `${subject.label} ${phase}`;
  try {
    if (o.warmupMessages > 0) {
      log(`${subject.label}: warm-up (${o.warmupMessages} messages)`);
      await endToEnd(subject, 'warmup', o.warmupMessages, o, timeoutMs, signal);
    }

    log(`${subject.label}: publish ${o.messages} messages`);
    const pubChannel = await subject.channel('publish');
    let t0 = performance.now();
    await pump((n) => pubChannel.publishBatch(n), o.messages, o.batchSize, o.inflightBatches, signal);
    const publishPerS = perS(o.messages, performance.now() - t0);
    rss.sample();

    log(`${subject.label}: drain the backlog with ${o.consumers} consumers`);
    const drained = new Countdown(o.messages, timeoutMs, what('drain'), signal);
    t0 = performance.now();
    const drainers = await pubChannel.consume(o.consumers, () => drained.tick());
    let drainEnd: number;
    try {
      drainEnd = await drained.done;
    } finally {
      drained.dispose();
      await drainers.stop();
    }
    const drainPerS = perS(o.messages, drainEnd - t0);
    rss.sample();

    log(`${subject.label}: end to end`);
    const e2ePerS = await endToEnd(subject, 'e2e', o.messages, o, timeoutMs, signal);
    rss.sample();

    const ratePerS = latencyRate(e2ePerS);
    const count = Math.min(o.messages, Math.max(100, Math.ceil((ratePerS * o.latencyDurationMs) / 1000)));
    log(`${subject.label}: latency at ${Math.round(ratePerS)} msg/s (${count} messages)`);
    const latency = await latencyAt(subject, ratePerS, count, o, timeoutMs, signal);
    return { label: subject.label, publishPerS, drainPerS, e2ePerS, latency, peakRssMb: rss.stop() };
  } finally {
    rss.stop();
  }
}

/** A phase slower than this fails: `phaseTimeoutMs`, at least 1 ms per message. */
export const phaseTimeoutMs = (o: BenchOptions) => Math.max(o.phaseTimeoutMs, o.messages);

/**
 * The end-to-end phase on a fresh channel `name`: consumers running, `count` messages published
 * in batches; resolves with messages per second from the first publish to the last handler.
 */
export async function endToEnd(
  subject: BenchSubject,
  name: string,
  count: number,
  o: BenchOptions,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<number> {
  const channel = await subject.channel(name);
  const handled = new Countdown(count, timeoutMs, `${subject.label} ${name}`, signal);
  const consumers = await channel.consume(o.consumers, () => handled.tick());
  const t0 = performance.now();
  try {
    await pump((n) => channel.publishBatch(n), count, o.batchSize, o.inflightBatches, signal);
    return perS(count, (await handled.done) - t0);
  } finally {
    handled.dispose();
    await consumers.stop();
  }
}

async function latencyAt(
  subject: BenchSubject,
  ratePerS: number,
  count: number,
  o: BenchOptions,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<LatencyResult> {
  const channel = await subject.channel('latency');
  const samples = new Float64Array(count);
  let n = 0;
  const handled = new Countdown(count, timeoutMs, `${subject.label} latency`, signal);
  const consumers = await channel.consume(o.consumers, (sentAtMs) => {
    if (n < count) samples[n++] = performance.now() - sentAtMs;
    handled.tick();
  });
  try {
    await offerAtRate((t) => channel.publishOne(t), count, ratePerS, signal);
    await handled.done;
  } finally {
    handled.dispose();
    await consumers.stop();
  }
  const sorted = samples.subarray(0, n).sort();
  return {
    ratePerS,
    messages: count,
    p50Ms: quantile(sorted, 0.5),
    p95Ms: quantile(sorted, 0.95),
    p99Ms: quantile(sorted, 0.99),
  };
}
