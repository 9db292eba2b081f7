// `npm run bench:gateway -- --transport URL [--messages N] [--size B] [--window W] [--rate R] [--json]`:
// WebSocket publish → subscriber through the gateway, against the same bus used in-process, in
// one process run on one transport. Reports throughput, p50/p99 latency and their ratios.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { type Bus, createBus, silentLogger } from '@agentbus/core';
import { createGateway } from '@agentbus/gateway';
import { benchSchemeOf, openTransport } from 'agentbus';
import { Redis } from 'ioredis';
import { WebSocket } from 'ws';

interface Options {
  readonly transport: string;
  readonly messages: number;
  readonly size: number;
  /** Publishes in flight (unconfirmed) at once, on both sides. */
  readonly window: number;
  /** Deliveries leased ahead by the subscriber, on both sides. */
  readonly prefetch: number;
  /** Offered rate of the latency phase (msg/s). */
  readonly rate: number;
  readonly latencySeconds: number;
  readonly json: boolean;
}

interface SideResult {
  readonly e2e_per_s: number;
  readonly p50_ms: number;
  readonly p99_ms: number;
}

function quantile(sorted: ArrayLike<number>, q: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] as number;
}

/** One side under test: publish `data` (resolves when durable) and a subscription calling `onMessage`. */
interface Side {
  publish(data: unknown): Promise<void>;
  subscribe(onMessage: (data: { i: number; t: number }) => void): Promise<void>;
  close(): Promise<void>;
}

function inProcessSide(bus: Bus, topic: string, group: string, prefetch: number): Side {
  let sub: { close(): Promise<void> } | undefined;
  return {
    publish: async (data) => {
      await bus.publish(topic, data);
    },
    subscribe: async (onMessage) => {
      sub = await bus.subscribe(topic, (d) => onMessage(d.data as { i: number; t: number }), {
        group,
        concurrency: prefetch,
        prefetch,
      });
    },
    close: async () => {
      await sub?.close();
    },
  };
}

function open(url: string): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  });
}

async function webSocketSide(wsUrl: string, topic: string, group: string, prefetch: number): Promise<Side> {
  const pub = await open(wsUrl);
  const subWs = await open(wsUrl);
  const pending = new Map<string, { resolve(): void; reject(e: Error): void }>();
  let seq = 0;
  const fail = (err: Error) => {
    for (const p of pending.values()) p.reject(err);
    pending.clear();
  };
  pub.on('close', (code, reason) => fail(new Error(`publisher socket closed: ${code} ${reason.toString()}`)));
  pub.on('message', (raw) => {
    const f = JSON.parse(raw.toString()) as { op: string; id?: string; code?: string; message?: string };
    if (f.op === 'error' && f.id === undefined) return fail(new Error(`${f.code}: ${f.message}`));
    const p = f.id === undefined ? undefined : pending.get(f.id);
    if (!p) return;
    pending.delete(f.id as string);
    if (f.op === 'published') p.resolve();
    else p.reject(new Error(`${f.code}: ${f.message}`));
  });
  return {
    publish: (data) =>
      new Promise<void>((resolve, reject) => {
        const id = String(seq++);
        pending.set(id, { resolve, reject });
        pub.send(JSON.stringify({ op: 'publish', id, topic, data }));
      }),
    subscribe: (onMessage) =>
      new Promise<void>((resolve, reject) => {
        subWs.on('message', (raw) => {
          const f = JSON.parse(raw.toString()) as {
            op: string;
            delivery?: string;
            envelope?: { data: { i: number; t: number } };
            code?: string;
            message?: string;
          };
          if (f.op === 'message') {
            onMessage(f.envelope?.data as { i: number; t: number });
            subWs.send(JSON.stringify({ op: 'ack', delivery: f.delivery }));
          } else if (f.op === 'subscribed') resolve();
          else if (f.op === 'error') reject(new Error(`${f.code}: ${f.message}`));
        });
        subWs.send(JSON.stringify({ op: 'subscribe', id: 's', topic, durable: group, prefetch }));
      }),
    close: async () => {
      pub.close();
      subWs.close();
    },
  };
}

/** Throughput: `messages` published with `window` in flight, until the last one is handled. */
async function throughput(side: Side, o: Options): Promise<number> {
  const payload = 'x'.repeat(o.size);
  let received = 0;
  let resolveDone: () => void = () => {};
  const done = new Promise<void>((r) => {
    resolveDone = r;
  });
  const total = o.messages;
  await side.subscribe(() => {
    if (++received === total) resolveDone();
  });
  const started = performance.now();
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < total; i = next++) await side.publish({ i, t: 0, payload });
  };
  await Promise.all(Array.from({ length: o.window }, worker));
  await done;
  return Math.round((total * 1000) / (performance.now() - started));
}

/** Latency at a fixed offered rate: publish stamp → handler, p50 and p99. */
async function latency(side: Side, o: Options): Promise<{ p50: number; p99: number }> {
  const payload = 'x'.repeat(o.size);
  const n = Math.max(1, Math.round(o.rate * o.latencySeconds));
  const samples = new Float64Array(n);
  let received = 0;
  let resolveDone: () => void = () => {};
  const done = new Promise<void>((r) => {
    resolveDone = r;
  });
  await side.subscribe((d) => {
    samples[received] = performance.now() - d.t;
    if (++received === n) resolveDone();
  });
  const started = performance.now();
  const inFlight: Promise<void>[] = [];
  for (let i = 0; i < n; i++) {
    const due = started + (i * 1000) / o.rate;
    const wait = due - performance.now();
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    inFlight.push(side.publish({ i, t: performance.now(), payload }));
  }
  await Promise.all(inFlight);
  await done;
  samples.sort();
  return { p50: quantile(samples, 0.5), p99: quantile(samples, 0.99) };
}

async function measure(makeSide: (phase: string) => Promise<Side>, o: Options): Promise<SideResult> {
  const warm = await makeSide('warm');
  await throughput(warm, { ...o, messages: Math.max(100, Math.floor(o.messages / 10)) });
  await warm.close();
  const t = await makeSide('tput');
  const e2e = await throughput(t, o);
  await t.close();
  const l = await makeSide('lat');
  const lat = await latency(l, o);
  await l.close();
  const r = (x: number) => Math.round(x * 100) / 100;
  return { e2e_per_s: e2e, p50_ms: r(lat.p50), p99_ms: r(lat.p99) };
}

/** Deletes every key under the run's prefix. */
async function deleteRedisKeys(url: string, prefix: string): Promise<void> {
  const redis = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await redis.connect();
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length > 0) await redis.del(...keys);
    } while (cursor !== '0');
  } finally {
    redis.disconnect();
  }
}

export async function runGatewayBench(o: Options): Promise<Record<string, unknown>> {
  const runId = randomBytes(4).toString('hex');
  const scheme = benchSchemeOf(o.transport);
  const dir = scheme === 'sqlite' ? mkdtempSync(join(tmpdir(), 'agentbus-bench-gw-')) : undefined;
  const url = dir ? `sqlite:${join(dir, 'bus.db')}` : o.transport;
  const transport = openTransport(url, { redis: { keyPrefix: `agentbus-bench-gw-${runId}` } });
  const bus = createBus({ transport, logger: silentLogger });
  await transport.connect();
  // The per-connection frame limit (1,000/s by default) is a guard against a runaway client; a
  // throughput run raises it, as a deployment expecting fast publishers would (ws.ratePerSecond).
  const gateway = await createGateway({
    bus,
    logger: false,
    dashboard: false,
    ws: { ratePerSecond: 1_000_000, rateBurst: 1_000_000 },
  });
  const base = await gateway.listen({ port: 0 });
  const wsUrl = `${base.replace(/^http/, 'ws')}/v1/ws`;
  try {
    const inProcess = await measure(
      async (phase) => inProcessSide(bus, `bench.gw${runId}.ip.${phase}`, `ip-${phase}-${runId}`, o.prefetch),
      o,
    );
    const ws = await measure(
      (phase) => webSocketSide(wsUrl, `bench.gw${runId}.ws.${phase}`, `ws-${phase}-${runId}`, o.prefetch),
      o,
    );
    return {
      transport: o.transport,
      messages: o.messages,
      size: o.size,
      window: o.window,
      prefetch: o.prefetch,
      offered_rate: o.rate,
      ws_e2e_per_s: ws.e2e_per_s,
      ws_p50_ms: ws.p50_ms,
      ws_p99_ms: ws.p99_ms,
      inprocess_e2e_per_s: inProcess.e2e_per_s,
      inprocess_p50_ms: inProcess.p50_ms,
      inprocess_p99_ms: inProcess.p99_ms,
      ratio: Math.round((ws.e2e_per_s / inProcess.e2e_per_s) * 1000) / 1000,
    };
  } finally {
    await gateway.close();
    await bus.close();
    if (scheme === 'redis') await deleteRedisKeys(o.transport, `agentbus-bench-gw-${runId}`);
    if (dir) rmSync(dir, { recursive: true, force: true });
  }
}

const { values } = parseArgs({
  options: {
    transport: { type: 'string', default: 'memory:' },
    messages: { type: 'string', default: '20000' },
    size: { type: 'string', default: '1024' },
    window: { type: 'string', default: '64' },
    prefetch: { type: 'string', default: '64' },
    rate: { type: 'string', default: '2000' },
    'latency-seconds': { type: 'string', default: '3' },
    json: { type: 'boolean', default: false },
  },
});
const o: Options = {
  transport: values.transport as string,
  messages: Number(values.messages),
  size: Number(values.size),
  window: Number(values.window),
  prefetch: Number(values.prefetch),
  rate: Number(values.rate),
  latencySeconds: Number(values['latency-seconds']),
  json: values.json as boolean,
};
const result = await runGatewayBench(o);
if (o.json) console.log(JSON.stringify(result));
else
  console.log(
    [
      `gateway bench on ${o.transport}: ${o.messages} × ${o.size} B, ${o.window} publishes in flight, prefetch ${o.prefetch}`,
      `  WebSocket:  ${result.ws_e2e_per_s} msg/s; p50 ${result.ws_p50_ms} ms, p99 ${result.ws_p99_ms} ms at ${o.rate} msg/s`,
      `  in-process: ${result.inprocess_e2e_per_s} msg/s; p50 ${result.inprocess_p50_ms} ms, p99 ${result.inprocess_p99_ms} ms at ${o.rate} msg/s`,
      `  ratio (WebSocket / in-process): ${result.ratio}`,
    ].join('\n'),
  );
