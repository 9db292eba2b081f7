import { serverSkipReason } from '@agentbus/conformance';
import { ConfigError, createBus } from '@agentbus/core';
import { type JetStreamManager, jetstreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentbusSubject } from '../src/bench/agentbus-subject.js';
import type { BenchSubject } from '../src/bench/bench-subject.js';
import { type BenchOptions, benchTable, resolveBenchOptions, runBench } from '../src/bench/index.js';
import { measureSubject, type SubjectResult } from '../src/bench/phases.js';
import {
  natsConnectOptions,
  PublishWindow,
  RAW_NATS_DEFAULTS,
  RawNatsSubject,
  rawNatsStream,
  rawNatsSubject,
  redactNatsUrl,
} from '../src/bench/raw-nats-subject.js';
import { agentbusNatsNamespace, removeAgentbusNats } from '../src/bench/run-bench.js';
import { openTransport } from '../src/open-transport.js';
import { createStyle } from '../src/output.js';

const NATS_URL = process.env.AGENTBUS_NATS_URL ?? 'nats://127.0.0.1:4222';
const skip = await serverSkipReason('NATS', NATS_URL, 4222);

const tiny = (over: Partial<BenchOptions> = {}) =>
  resolveBenchOptions({
    transport: NATS_URL,
    messages: 500,
    size: 256,
    consumers: 2,
    warmupMessages: 0,
    latencyDurationMs: 100,
    ...over,
  });

let seq = 0;
const uniqueRunId = () => `t${Date.now().toString(36)}${process.pid.toString(36)}${seq++}`;

interface Counts {
  published: number;
  handled: number;
}

/** Wraps a subject to count, per channel, what was published and what reached a handler. */
function counting(subject: BenchSubject): { subject: BenchSubject; counts: Map<string, Counts> } {
  const counts = new Map<string, Counts>();
  return {
    counts,
    subject: {
      label: subject.label,
      async channel(name) {
        const c: Counts = { published: 0, handled: 0 };
        counts.set(name, c);
        const channel = await subject.channel(name);
        return {
          async publishBatch(n) {
            await channel.publishBatch(n);
            c.published += n;
          },
          async publishOne(t) {
            await channel.publishOne(t);
            c.published++;
          },
          consume: (consumers, onMessage) =>
            channel.consume(consumers, (t) => {
              c.handled++;
              onMessage(t);
            }),
        };
      },
      close: () => subject.close(),
    },
  };
}

function expectPositive(values: Record<string, unknown>, keys: readonly string[]): void {
  for (const key of keys) {
    const v = values[key];
    expect(typeof v === 'number' && Number.isFinite(v) && v > 0, `${key} = ${String(v)}`).toBe(true);
  }
}

function expectSaneResult(r: SubjectResult): void {
  expectPositive({ ...r, ...r.latency }, ['publishPerS', 'drainPerS', 'e2ePerS', 'p50Ms', 'p99Ms', 'peakRssMb']);
  expect(r.latency.p50Ms).toBeLessThanOrEqual(r.latency.p99Ms);
}

/** Every message published on a channel reached a handler exactly once. */
function expectEachHandledOnce(counts: Map<string, Counts>, o: BenchOptions): void {
  expect([...counts.keys()].sort()).toEqual(['e2e', 'latency', 'publish']);
  expect(counts.get('publish')?.published).toBe(o.messages);
  expect(counts.get('e2e')?.published).toBe(o.messages);
  expect(counts.get('latency')?.published).toBeGreaterThanOrEqual(100);
  for (const [name, c] of counts) expect(c.handled, `${name}: handled of ${c.published}`).toBe(c.published);
}

/** The streams of the agentbus side of run `runId`, spelt out from the transport's naming scheme. */
const agentbusStreams = (runId: string) => [`AB_bench_${runId}`, `AB_bench_${runId}_DLQ`];

describe('the nats:// benchmark without a server', () => {
  it('refuses a malformed NATS URL with a ConfigError before connecting, without echoing the password', async () => {
    for (const transport of [
      'nats://',
      'nats://user:secret@bad host:4222',
      'nats://u:secret@h:4222/path',
      'nats://h?x=1',
    ]) {
      const err = await runBench({ transport }).catch((e: unknown) => e);
      expect(err, transport).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).path).toBe('transport');
      expect((err as ConfigError).message).not.toContain('secret');
    }
  });

  it('never shows the password or token of the server URL', () => {
    expect(redactNatsUrl('nats://u:secret@127.0.0.1:4222')).toBe('nats://u:***@127.0.0.1:4222');
    expect(redactNatsUrl('nats://s3cr3t@127.0.0.1:4222')).toBe('nats://***@127.0.0.1:4222');
    expect(redactNatsUrl('nats://127.0.0.1:4222')).toBe('nats://127.0.0.1:4222');
  });

  it('the raw publish window keeps at most its limit in flight and hands freed slots on in order', async () => {
    const window = new PublishWindow(2);
    expect(window.acquire()).toBeUndefined();
    expect(window.acquire()).toBeUndefined();
    const order: number[] = [];
    const third = window.acquire()?.then(() => order.push(3));
    const fourth = window.acquire()?.then(() => order.push(4));
    expect(third).toBeInstanceOf(Promise);
    expect(window.inFlight).toBe(2);
    window.release();
    await third;
    expect(order).toEqual([3]);
    expect(window.inFlight).toBe(2);
    window.release();
    await fourth;
    window.release();
    window.release();
    expect(order).toEqual([3, 4]);
    expect(window.inFlight).toBe(0);
  });

  it('passes URL credentials to nats.js as user/pass or token, not in the server address', () => {
    expect(natsConnectOptions('nats://127.0.0.1:4222')).toEqual({ servers: 'nats://127.0.0.1:4222' });
    expect(natsConnectOptions('nats://u:p%40ss@h:4222')).toEqual({ servers: 'nats://h:4222', user: 'u', pass: 'p@ss' });
    expect(natsConnectOptions('nats://tok@h:4222')).toEqual({ servers: 'nats://h:4222', token: 'tok' });
  });
});

describe.skipIf(skip !== undefined)('the nats:// benchmark on a real NATS JetStream server', () => {
  let nc: NatsConnection;
  let jsm: JetStreamManager;
  beforeAll(async () => {
    nc = await connect(natsConnectOptions(NATS_URL));
    jsm = await jetstreamManager(nc);
  });
  afterAll(async () => {
    await nc?.close();
  });

  /** The names of all streams on the server that contain `runId`. */
  async function streamsOf(runId: string): Promise<string[]> {
    const found: string[] = [];
    for await (const name of jsm.streams.names()) if (name.includes(runId)) found.push(name);
    return found.sort();
  }

  /** Waits (up to 5 s) until the durable `name` of `stream` has nothing pending or unacked; its last info. */
  async function settled(stream: string, name: string) {
    const deadline = Date.now() + 5_000;
    for (;;) {
      const info = await jsm.consumers.info(stream, name);
      if ((info.num_pending === 0 && info.num_ack_pending === 0) || Date.now() > deadline) return info;
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  it('raw nats.js: one file stream per run, one durable per channel, every message handled once and acked, stream deleted on close', async () => {
    const o = tiny();
    const runId = uniqueRunId();
    const raw = await RawNatsSubject.open(NATS_URL, { runId, size: o.size });
    const { subject, counts } = counting(raw);
    try {
      const stream = await jsm.streams.info(rawNatsStream(runId));
      expect(stream.config).toMatchObject({
        subjects: [`bench.raw.${runId}.>`],
        storage: 'file',
        retention: RAW_NATS_DEFAULTS.retention,
        num_replicas: 1,
      });
      const result = await measureSubject(
        subject,
        o,
        () => 2_000,
        () => {},
      );
      expect(result.label).toBe('raw nats.js');
      expectSaneResult(result);
      expectEachHandledOnce(counts, o);
      expect(raw.channels).toEqual([...counts.keys()]);
      for (const [name, c] of counts) {
        const info = await settled(raw.stream, name);
        expect(info.config).toMatchObject({
          durable_name: name,
          filter_subject: rawNatsSubject(runId, name),
          ack_policy: 'explicit',
          max_ack_pending: RAW_NATS_DEFAULTS.maxAckPending,
        });
        expect({ pending: info.num_pending, unacked: info.num_ack_pending, redelivered: info.num_redelivered }).toEqual(
          {
            pending: 0,
            unacked: 0,
            redelivered: 0,
          },
        );
        expect(info.delivered.consumer_seq, name).toBe(c.published);
      }
      // Interest retention: once every message was acked, the stream is empty.
      expect((await jsm.streams.info(raw.stream)).state.messages).toBe(0);
    } finally {
      await subject.close();
    }
    expect(await streamsOf(runId)).toEqual([]);
    await subject.close(); // idempotent
  });

  it('agentbus on NATS: every message handled once, and the cleanup deletes its streams', async () => {
    const o = tiny();
    const runId = uniqueRunId();
    const transport = openTransport(NATS_URL, { nats: { namespace: agentbusNatsNamespace(runId) } });
    const bus = createBus({ transport, source: 'bench-test' });
    const agentbus = new AgentbusSubject(bus, {
      concurrency: 16,
      prefetch: RAW_NATS_DEFAULTS.maxMessages,
      runId,
      size: 256,
    });
    const { subject, counts } = counting(agentbus);
    const log: string[] = [];
    try {
      const result = await measureSubject(
        subject,
        o,
        () => 1_000,
        () => {},
      );
      expectSaneResult(result);
      expectEachHandledOnce(counts, o);
      await subject.close();
      expect(await streamsOf(runId)).toEqual(expect.arrayContaining([`AB_bench_${runId}`]));
    } finally {
      await subject.close();
      await removeAgentbusNats(NATS_URL, runId, (t) => log.push(t));
    }
    expect(log.join('\n')).toMatch(new RegExp(`deleted [12] streams of run ${runId}`));
    expect(await streamsOf(runId)).toEqual([]);
  });

  it('the cleanup of a run that left no stream deletes nothing and does not fail', async () => {
    const runId = uniqueRunId();
    const log: string[] = [];
    await removeAgentbusNats(NATS_URL, runId, (t) => log.push(t));
    expect(log).toEqual([`agentbus: deleted 0 streams of run ${runId} (namespace bench_${runId})`]);
  });

  it('runs agentbus and raw nats.js in one run and leaves no stream of the run behind', async () => {
    const log: string[] = [];
    const report = await runBench(tiny({ rate: 1_000, warmupMessages: 50 }), (t) => log.push(t));
    expect(report).toMatchObject({
      transport: redactNatsUrl(NATS_URL),
      messages: 500,
      raw: 'raw nats.js',
      prefetch: RAW_NATS_DEFAULTS.maxMessages,
      raw_prefetch: RAW_NATS_DEFAULTS.maxMessages,
      raw_retention: RAW_NATS_DEFAULTS.retention,
      raw_publish_window: RAW_NATS_DEFAULTS.publishWindow,
      latency_rate_per_s: 1_000,
    });
    expect(report.queue_type).toBeUndefined();
    expectPositive({ ...report }, [
      'publish_per_s',
      'drain_per_s',
      'e2e_per_s',
      'p50_ms',
      'p99_ms',
      'raw_publish_per_s',
      'raw_drain_per_s',
      'raw_e2e_per_s',
      'raw_p50_ms',
      'raw_p99_ms',
      'ratio',
    ]);
    expect(report.ratio).toBeCloseTo(report.e2e_per_s / report.raw_e2e_per_s, 2);
    // Both subjects went through every phase (each phase waits for all of its messages).
    for (const label of ['agentbus', 'raw nats.js']) {
      for (const phase of ['warm-up (50 messages)', 'publish 500 messages', 'end to end', 'latency at 1000 msg/s']) {
        expect(
          log.some((l) => l.startsWith(`${label}: ${phase}`)),
          `${label}: ${phase}\n${log.join('\n')}`,
        ).toBe(true);
      }
    }
    const table = benchTable(report, createStyle(false)).join('\n');
    expect(table).toContain('raw = raw nats.js JetStream on a file stream of its own');
    expect(table).toContain(`at most ${RAW_NATS_DEFAULTS.publishWindow} publishes in flight`);

    const runId = log.map((l) => /streams of run (\w+) \(namespace/.exec(l)?.[1]).find(Boolean);
    expect(runId, log.join('\n')).toBeDefined();
    expect(log.join('\n')).toContain(`(namespace bench_${runId}): ${agentbusStreams(runId as string)[0]}`);
    expect(await streamsOf(runId as string)).toEqual([]);
  });
});
