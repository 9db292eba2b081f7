import { AMQP_TRANSPORT_DEFAULTS } from '@agentbus/amqp';
import { serverSkipReason } from '@agentbus/conformance';
import { ConfigError, createBus } from '@agentbus/core';
import { type ChannelModel, connect } from 'amqplib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentbusSubject } from '../src/bench/agentbus-subject.js';
import type { BenchQueueType } from '../src/bench/bench-options.js';
import type { BenchSubject } from '../src/bench/bench-subject.js';
import { type BenchOptions, benchTable, resolveBenchOptions, runBench } from '../src/bench/index.js';
import { measureSubject, type SubjectResult } from '../src/bench/phases.js';
import { RAW_AMQP_DEFAULTS, RawAmqpSubject, rawAmqpQueue, redactAmqpUrl } from '../src/bench/raw-amqp-subject.js';
import { agentbusNamespace, removeAgentbusAmqp } from '../src/bench/run-bench.js';
import { openTransport } from '../src/open-transport.js';
import { createStyle } from '../src/output.js';

const AMQP_URL = process.env.AGENTBUS_AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';
const skip = await serverSkipReason('RabbitMQ', AMQP_URL, 5672);

const tiny = (over: Partial<BenchOptions> = {}) =>
  resolveBenchOptions({
    transport: AMQP_URL,
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

/**
 * Everything the agentbus side of run `runId` may have declared for the channels `names`, spelt
 * out here from the transport's naming scheme (not taken from the cleanup under test).
 */
function agentbusEntities(runId: string, names: readonly string[]): { queues: string[]; exchanges: string[] } {
  const ns = `bench.${runId}`;
  const groupQueues = names.map((n) => `${ns}.q.bench-${runId}-${n}`);
  return {
    queues: [
      `${ns}.groups`,
      ...groupQueues,
      ...groupQueues.map((q) => `${q}.dlq`),
      ...groupQueues.flatMap((q) => AMQP_TRANSPORT_DEFAULTS.retryLadderMs.map((ms) => `${q}.retry.${ms}`)),
    ],
    exchanges: [ns, ...groupQueues.map((q) => `${q}.dlx`)],
  };
}

describe('the amqp:// benchmark without a server', () => {
  it('refuses a malformed AMQP URL with a ConfigError before connecting, without echoing the password', async () => {
    for (const transport of ['amqp://', 'amqp://user:secret@bad host:5672', 'amqps://h:5671/#frag']) {
      const err = await runBench({ transport }).catch((e: unknown) => e);
      expect(err, transport).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).path).toBe('transport');
      expect((err as ConfigError).message).not.toContain('secret');
    }
  });

  it('takes --queue-type on amqp:// runs only, and only quorum or classic', async () => {
    const other = await runBench({ transport: 'memory:', queueType: 'classic' }).catch((e: unknown) => e);
    expect(other).toBeInstanceOf(ConfigError);
    expect((other as ConfigError).path).toBe('bench.queueType');
    expect(() => resolveBenchOptions({ queueType: 'lazy' as BenchQueueType })).toThrow(ConfigError);
  });

  it('never shows the password of the broker URL', () => {
    expect(redactAmqpUrl('amqp://guest:guest@127.0.0.1:5672')).toBe('amqp://guest:***@127.0.0.1:5672');
    expect(redactAmqpUrl('amqps://u:p%40ss@broker:5671/prod')).toBe('amqps://u:***@broker:5671/prod');
    expect(redactAmqpUrl('amqp://127.0.0.1')).toBe('amqp://127.0.0.1');
  });
});

describe.skipIf(skip !== undefined)('the amqp:// benchmark on a real RabbitMQ', () => {
  let model: ChannelModel;
  beforeAll(async () => {
    model = await connect(AMQP_URL);
    model.on('error', () => {});
  });
  afterAll(async () => {
    await model?.close();
  });

  /** The message count of `queue`, or undefined when it does not exist (404). */
  async function messagesIn(queue: string): Promise<number | undefined> {
    const ch = await model.createChannel();
    ch.on('error', () => {});
    try {
      const { messageCount } = await ch.checkQueue(queue);
      await ch.close();
      return messageCount;
    } catch (err) {
      expect((err as { code?: unknown }).code, `${queue}: ${String(err)}`).toBe(404);
      return undefined;
    }
  }

  /** Those of `names` the broker still has (a passive declare that does not fail with 404). */
  async function existing(kind: 'queue' | 'exchange', names: readonly string[]): Promise<string[]> {
    const found: string[] = [];
    for (const name of names) {
      const ch = await model.createChannel();
      ch.on('error', () => {});
      try {
        await (kind === 'queue' ? ch.checkQueue(name) : ch.checkExchange(name));
        found.push(name);
        await ch.close();
      } catch (err) {
        expect((err as { code?: unknown }).code, `${kind} ${name}: ${String(err)}`).toBe(404);
      }
    }
    return found;
  }

  it.each<BenchQueueType>(['quorum', 'classic'])(
    'raw amqplib on %s queues: one durable queue per channel, every message handled once and acked, queues deleted on close',
    async (queueType) => {
      const o = tiny();
      const runId = uniqueRunId();
      const raw = await RawAmqpSubject.open(AMQP_URL, { runId, size: o.size, queueType });
      const { subject, counts } = counting(raw);
      try {
        const result = await measureSubject(
          subject,
          o,
          () => 2_000,
          () => {},
        );
        expect(result.label).toBe('raw amqplib');
        expectSaneResult(result);
        expectEachHandledOnce(counts, o);
        for (const name of counts.keys()) {
          expect(await messagesIn(rawAmqpQueue(runId, name)), `${name}: left in the queue`).toBe(0);
        }
        expect(raw.queues).toEqual([...counts.keys()].map((n) => rawAmqpQueue(runId, n)));
      } finally {
        await subject.close();
      }
      expect(await existing('queue', raw.queues)).toEqual([]);
      expect(await existing('exchange', [raw.exchange])).toEqual([]);
      await subject.close(); // idempotent
    },
  );

  it('agentbus on RabbitMQ: every message handled once, and the cleanup leaves none of its queues or exchanges', async () => {
    const o = tiny({ queueType: 'classic' });
    const runId = uniqueRunId();
    const transport = openTransport(AMQP_URL, { amqp: { namespace: agentbusNamespace(runId), queueType: 'classic' } });
    const bus = createBus({ transport, source: 'bench-test' });
    const agentbus = new AgentbusSubject(bus, {
      concurrency: 16,
      prefetch: RAW_AMQP_DEFAULTS.prefetch,
      runId,
      size: 256,
    });
    const { subject, counts } = counting(agentbus);
    const names = ['publish', 'e2e', 'latency'];
    const { queues, exchanges } = agentbusEntities(runId, names);
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
      for (const q of queues.slice(1, 1 + names.length)) expect(await messagesIn(q), q).toBe(0);
      expect(await existing('exchange', exchanges)).toEqual(exchanges);
    } finally {
      await subject.close();
      await removeAgentbusAmqp(AMQP_URL, runId, names, (t) => log.push(t));
    }
    expect(log.join('\n')).toMatch(new RegExp(`deleted \\d+ queues and ${exchanges.length} exchanges of run ${runId}`));
    expect(await existing('queue', queues)).toEqual([]);
    expect(await existing('exchange', exchanges)).toEqual([]);
  });

  it.each<BenchQueueType | undefined>([undefined, 'classic'])(
    'runs agentbus and raw amqplib in one run (queue type %s) and leaves no queue or exchange of the run behind',
    async (queueType) => {
      const log: string[] = [];
      const report = await runBench(tiny({ rate: 1_000, queueType, warmupMessages: 50 }), (t) => log.push(t));
      expect(report).toMatchObject({
        transport: redactAmqpUrl(AMQP_URL),
        messages: 500,
        raw: 'raw amqplib',
        queue_type: queueType ?? 'quorum',
        prefetch: RAW_AMQP_DEFAULTS.prefetch,
        raw_prefetch: RAW_AMQP_DEFAULTS.prefetch,
        latency_rate_per_s: 1_000,
      });
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
      for (const label of ['agentbus', 'raw amqplib']) {
        for (const phase of ['warm-up (50 messages)', 'publish 500 messages', 'end to end', 'latency at 1000 msg/s']) {
          expect(
            log.some((l) => l.startsWith(`${label}: ${phase}`)),
            `${label}: ${phase}\n${log.join('\n')}`,
          ).toBe(true);
        }
      }
      const table = benchTable(report, createStyle(false)).join('\n');
      expect(table).toContain(`raw = raw amqplib on ${report.queue_type} durable queues`);
      expect(table).toContain('each publish batch of 100 waiting for its own confirms');

      const runId = log.map((l) => /of run (\w+) \(namespace/.exec(l)?.[1]).find(Boolean);
      expect(runId, log.join('\n')).toBeDefined();
      const names = ['warmup', 'publish', 'e2e', 'latency'];
      const { queues, exchanges } = agentbusEntities(runId as string, names);
      queues.push(...names.map((n) => rawAmqpQueue(runId as string, n)));
      expect(await existing('queue', queues)).toEqual([]);
      expect(await existing('exchange', exchanges)).toEqual([]);
    },
  );
});
