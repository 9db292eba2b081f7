import { until } from '@agentbus/conformance';
import {
  type Bus,
  CircuitBreaker,
  createBus,
  type Delivery,
  memoryTransport,
  UnrecoverableError,
} from '@agentbus/core';
import { BoundedLabels, BusMetrics, createGateway, type Gateway, trackCircuit } from '@agentbus/gateway';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { post, uniqueTopic } from './gateway-fixtures.js';

/** One sample line of the Prometheus text format. */
interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

function parseMetrics(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)$/.exec(line);
    if (!m) throw new Error(`unparsable metrics line: ${line}`);
    const labels: Record<string, string> = {};
    for (const [, k, v] of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[k as string] = v as string;
    out.push({ name: m[1] as string, labels, value: Number(m[3]) });
  }
  return out;
}

/** The value of the one sample of `name` whose labels include `labels`; undefined when there is none. */
function sampleValue(samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  const found = samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  if (found.length > 1) throw new Error(`${found.length} samples of ${name} ${JSON.stringify(labels)}`);
  return found[0]?.value;
}

async function scrape(url: string): Promise<Sample[]> {
  const res = await fetch(`${url}/metrics`);
  expect(res.status).toBe(200);
  return parseMetrics(await res.text());
}

const REPORTS_GROUP = 'reports';
let bus: Bus;
let gateway: Gateway;
let url: string;

beforeAll(async () => {
  bus = createBus({ transport: memoryTransport() });
  gateway = await createGateway({ bus, logger: false, dashboard: false, groups: [REPORTS_GROUP] });
  url = await gateway.listen({ port: 0 });
});

afterAll(async () => {
  await gateway?.close();
  await bus?.close();
});

describe('GET /metrics', () => {
  it('serves the Prometheus text format with the process metrics', async () => {
    const res = await fetch(`${url}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/plain; version=0.0.4; charset=utf-8');
    const samples = parseMetrics(await res.text());
    expect(sampleValue(samples, 'process_start_time_seconds')).toBeGreaterThan(0);
    expect(sampleValue(samples, 'nodejs_heap_size_used_bytes')).toBeGreaterThan(0);
    expect(sampleValue(samples, 'agentbus_gateway_connections')).toBe(0);
  });

  it('counts publishes, deliveries, acks, nacks, redeliveries and dead letters by topic, group and reason', async () => {
    const topic = uniqueTopic('jobs');
    const group = `workers-${topic.split('.')[1]}`;
    const sub = await bus.subscribe<{ kind: string }>(
      topic,
      async (d: Delivery<{ kind: string }>) => {
        switch (d.data.kind) {
          case 'flaky':
            if (d.attempt === 1) throw new Error('model timeout');
            return;
          case 'poison':
            throw new UnrecoverableError('cannot parse the order');
          case 'doomed':
            throw new Error('always fails');
          case 'refused':
            await d.deadLetter('bad-input');
            return;
          default:
            return;
        }
      },
      { group, maxAttempts: 2, backoff: { initialDelayMs: 1, maxDelayMs: 1 } },
    );
    const res = await post(`${url}/v1/topics/${topic}/messages`, {
      messages: ['ok', 'flaky', 'poison', 'doomed', 'refused'].map((kind) => ({ data: { kind } })),
    });
    expect(res.status).toBe(201);

    let samples: Sample[] = [];
    await until(
      async () => {
        samples = await scrape(url);
        return (
          sampleValue(samples, 'agentbus_messages_acked_total', { group }) === 2 &&
          samples
            .filter((s) => s.name === 'agentbus_messages_dead_lettered_total' && s.labels.group === group)
            .reduce((n, s) => n + s.value, 0) === 3
        );
      },
      10_000,
      'two acks and three dead letters',
    );
    expect(sampleValue(samples, 'agentbus_messages_published_total', { topic })).toBe(5);
    expect(sampleValue(samples, 'agentbus_messages_delivered_total', { group })).toBe(7);
    expect(sampleValue(samples, 'agentbus_messages_redelivered_total', { group })).toBe(2);
    expect(sampleValue(samples, 'agentbus_messages_nacked_total', { group })).toBe(2);
    expect(sampleValue(samples, 'agentbus_messages_dead_lettered_total', { group, reason: 'unrecoverable' })).toBe(1);
    expect(sampleValue(samples, 'agentbus_messages_dead_lettered_total', { group, reason: 'max-attempts' })).toBe(1);
    expect(sampleValue(samples, 'agentbus_messages_dead_lettered_total', { group, reason: 'handler' })).toBe(1);
    expect(sampleValue(samples, 'agentbus_handler_duration_seconds_count', { group })).toBe(7);
    expect(sampleValue(samples, 'agentbus_in_flight', { group })).toBe(0);
    expect(
      sampleValue(samples, 'agentbus_http_requests_total', {
        method: 'POST',
        route: '/v1/topics/:topic/messages',
        status_code: '201',
      }),
    ).toBe(1);
    // What the transport holds agrees: three dead letters of this topic.
    const dead = await bus.transport.deadLetters.list({ topic });
    expect(dead).toHaveLength(3);
    await sub.close();
  });

  it("reports a group's backlog and in-flight messages from the transport", async () => {
    const topic = uniqueTopic('report');
    // A durable group that exists and holds messages while nobody consumes.
    const idle = await bus.subscribe(topic, () => {}, { group: REPORTS_GROUP });
    await idle.close();
    for (let i = 0; i < 3; i++) await bus.publish(topic, { i });
    let samples = await scrape(url);
    expect(sampleValue(samples, 'agentbus_group_backlog', { group: REPORTS_GROUP })).toBe(3);
    expect(sampleValue(samples, 'agentbus_group_in_flight', { group: REPORTS_GROUP })).toBe(0);

    let release!: () => void;
    const held = new Promise<void>((r) => {
      release = r;
    });
    let started = 0;
    const worker = await bus.subscribe(
      topic,
      async () => {
        started++;
        await held;
      },
      { group: REPORTS_GROUP, concurrency: 1 },
    );
    await until(() => started === 1, 10_000, 'one handler running');
    samples = await scrape(url);
    expect(sampleValue(samples, 'agentbus_group_backlog', { group: REPORTS_GROUP })).toBe(2);
    expect(sampleValue(samples, 'agentbus_group_in_flight', { group: REPORTS_GROUP })).toBe(1);
    expect(sampleValue(samples, 'agentbus_in_flight', { group: REPORTS_GROUP })).toBe(1);
    release();
    await until(
      async () => sampleValue(await scrape(url), 'agentbus_group_backlog', { group: REPORTS_GROUP }) === 0,
      10_000,
      'backlog drained',
    );
    await worker.close();
  });

  it('reports the state of tracked circuit breakers', async () => {
    const breaker = new CircuitBreaker({ consecutiveFailures: 1, recoveryTimeoutMs: 60_000 });
    const untrack = trackCircuit('model-api', breaker);
    expect(sampleValue(await scrape(url), 'agentbus_circuit_state', { name: 'model-api' })).toBe(0);
    await expect(
      breaker.run(() => {
        throw new Error('503 from the model');
      }),
    ).rejects.toThrow('503');
    expect(sampleValue(await scrape(url), 'agentbus_circuit_state', { name: 'model-api' })).toBe(2);
    untrack();
    expect(sampleValue(await scrape(url), 'agentbus_circuit_state', { name: 'model-api' })).toBeUndefined();
  });

  it('runs a second gateway in the same process with its own registry', async () => {
    const other = await createGateway({ bus, logger: false, dashboard: false });
    const otherUrl = await other.listen({ port: 0 });
    try {
      const topic = uniqueTopic('second');
      expect((await post(`${otherUrl}/v1/topics/${topic}/messages`, { data: 1 })).status).toBe(201);
      const samples = await scrape(otherUrl);
      expect(sampleValue(samples, 'agentbus_messages_published_total', { topic })).toBe(1);
      // Requests to the first gateway are not counted by the second.
      expect(
        sampleValue(samples, 'agentbus_http_requests_total', {
          route: '/v1/topics/:topic/messages',
          status_code: '201',
        }),
      ).toBe(1);
      expect(sampleValue(samples, 'process_start_time_seconds')).toBeGreaterThan(0);
    } finally {
      await other.close();
    }
  });
});

describe('label cardinality', () => {
  it('keeps at most maxLabelValues topics, counting the rest as other', async () => {
    const registry = new Registry();
    const metricsBus = createBus({ transport: memoryTransport(), middleware: [] });
    metricsBus.use(new BusMetrics(registry, { maxLabelValues: 2 }).middleware());
    for (const t of ['a.one', 'a.two', 'a.three', 'a.four', 'a.one']) await metricsBus.publish(t, 1);
    const samples = parseMetrics(await registry.metrics());
    const published = samples.filter((s) => s.name === 'agentbus_messages_published_total');
    expect(Object.fromEntries(published.map((s) => [s.labels.topic, s.value]))).toEqual({
      'a.one': 2,
      'a.two': 1,
      other: 2,
    });
    await metricsBus.close();
  });

  it('BoundedLabels passes the first values through and maps later ones to other', () => {
    const labels = new BoundedLabels(2);
    expect([labels.value('x'), labels.value('y'), labels.value('z'), labels.value('x')]).toEqual([
      'x',
      'y',
      'other',
      'x',
    ]);
    expect(labels.size).toBe(2);
  });
});
