import { randomBytes } from 'node:crypto';
import { createBus, silentLogger, type Transport } from '@agentbus/core';
import { type OpenTransportOptions, openTransport, parseTransportUrl } from '../open-transport.js';
import { quantile } from './measure.js';
import { deleteKeysMatching } from './redis-clients.js';
import {
  agentbusGroup,
  agentbusKeyPrefix,
  agentbusNamespace,
  agentbusNatsNamespace,
  removeAgentbusAmqp,
  removeAgentbusNats,
} from './run-bench.js';

export interface RequestReplyBenchOptions {
  readonly transport: string;
  /** Round trips measured (after a warm-up of a tenth of them). */
  readonly requests: number;
  /** Requests in flight at once (closed loop). */
  readonly concurrency: number;
  readonly size: number;
  readonly transportOptions?: OpenTransportOptions;
}

export interface RequestReplyBenchResult {
  readonly transport: string;
  readonly requests: number;
  readonly concurrency: number;
  readonly size: number;
  /** Completed round trips per second. */
  readonly rr_per_s: number;
  readonly rr_p50_ms: number;
  readonly rr_p95_ms: number;
  readonly rr_p99_ms: number;
  /** p50 / p99 of single round trips, one at a time (latency without queueing). */
  readonly rr_serial_p50_ms: number;
  readonly rr_serial_p99_ms: number;
}

/**
 * Request-reply round trips: a replier that echoes and a requester — separate clients of a server
 * transport, one client of an embedded one (`memory:`, `sqlite:`; separate processes on one SQLite
 * file see each other's messages within the transport's `pollIntervalMs`) — with `concurrency`
 * requests in flight; then the same one at a time for the latency of a lone round trip.
 */
export async function runRequestReplyBench(o: RequestReplyBenchOptions): Promise<RequestReplyBenchResult> {
  const runId = randomBytes(4).toString('hex');
  const scheme = parseTransportUrl(o.transport).scheme;
  // On a shared server everything lives under names of the run's own, deleted afterwards.
  const transportOptions: OpenTransportOptions = {
    ...o.transportOptions,
    redis: { keyPrefix: agentbusKeyPrefix(runId), ...o.transportOptions?.redis },
    amqp: { namespace: agentbusNamespace(runId), ...o.transportOptions?.amqp },
    nats: { namespace: agentbusNatsNamespace(runId), ...o.transportOptions?.nats },
  };
  // The embedded transports run in one process (one client, woken at once by its own publishes);
  // the servers get a client per side, as two processes would have.
  const shared: Transport | undefined =
    scheme === 'memory' || scheme === 'sqlite' ? openTransport(o.transport, transportOptions) : undefined;
  const open = () => shared ?? openTransport(o.transport, transportOptions);
  const replier = createBus({ transport: open(), logger: silentLogger, ownsTransport: !shared });
  const requester = createBus({ transport: open(), logger: silentLogger, ownsTransport: !shared });
  const topic = `bench.rr${runId}`;
  const group = agentbusGroup(runId, 'rr');
  const payload = { blob: 'x'.repeat(o.size) };
  try {
    await replier.reply(topic, (d) => d.data, { group, concurrency: o.concurrency, prefetch: 2 * o.concurrency });
    const run = async (n: number, concurrency: number): Promise<{ ms: number; latencies: Float64Array }> => {
      const latencies = new Float64Array(n);
      let next = 0;
      const started = performance.now();
      const worker = async () => {
        for (let i = next++; i < n; i = next++) {
          const t = performance.now();
          await requester.request(topic, payload, { timeoutMs: 60_000 });
          latencies[i] = performance.now() - t;
        }
      };
      await Promise.all(Array.from({ length: concurrency }, worker));
      return { ms: performance.now() - started, latencies: latencies.sort() };
    };
    await run(Math.max(10, Math.floor(o.requests / 10)), o.concurrency); // warm-up: inbox, groups, JIT
    const loaded = await run(o.requests, o.concurrency);
    const serial = await run(Math.min(o.requests, 500), 1);
    const round = (x: number) => Math.round(x * 100) / 100;
    return {
      transport: o.transport,
      requests: o.requests,
      concurrency: o.concurrency,
      size: o.size,
      rr_per_s: Math.round((o.requests * 1_000) / loaded.ms),
      rr_p50_ms: round(quantile(loaded.latencies, 0.5)),
      rr_p95_ms: round(quantile(loaded.latencies, 0.95)),
      rr_p99_ms: round(quantile(loaded.latencies, 0.99)),
      rr_serial_p50_ms: round(quantile(serial.latencies, 0.5)),
      rr_serial_p99_ms: round(quantile(serial.latencies, 0.99)),
    };
  } finally {
    await requester.close();
    await replier.close();
    await shared?.close();
    const log = (text: string) => process.stderr.write(`bench: ${text}\n`);
    if (scheme === 'redis') await deleteKeysMatching(o.transport, [`${agentbusKeyPrefix(runId)}*`]).catch(() => 0);
    if (scheme === 'amqp') await removeAgentbusAmqp(o.transport, runId, ['rr'], log);
    if (scheme === 'nats') await removeAgentbusNats(o.transport, runId, log);
  }
}

/** The text report of a request-reply run. */
export function formatRequestReplyReport(r: RequestReplyBenchResult): string {
  return [
    `request-reply on ${r.transport}: ${r.requests} round trips, ${r.concurrency} in flight, ${r.size} B payload`,
    `  ${r.rr_per_s} round trips/s; p50 ${r.rr_p50_ms} ms, p95 ${r.rr_p95_ms} ms, p99 ${r.rr_p99_ms} ms`,
    `  one at a time: p50 ${r.rr_serial_p50_ms} ms, p99 ${r.rr_serial_p99_ms} ms`,
  ].join('\n');
}
