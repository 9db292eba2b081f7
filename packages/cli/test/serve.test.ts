import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serverSkipReason, until } from '@agentbus/conformance';
import { type Bus, createBus, type DeadLetterView, type Transport, UnrecoverableError } from '@agentbus/core';
import { redisTransport } from '@agentbus/redis';
import { sqliteTransport } from '@agentbus/sqlite';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { agentbus, CliProcess } from './cli-process.js';

// ---------------------------------------------------------------------------------------------
// Helpers: a real `agentbus serve` child process (from source, as cli-process.ts runs it).

/** A running `agentbus serve` and the base URL it printed. */
class Server {
  private constructor(
    readonly cli: CliProcess,
    readonly url: string,
  ) {}

  /**
   * Starts `agentbus serve --port 0 …args` and waits for its "listening on" line. A server started
   * inside a test is killed after it; a suite's shared one (`perTest` false) after the suite.
   */
  static async start(args: readonly string[], env: NodeJS.ProcessEnv = {}, perTest = true): Promise<Server> {
    const cli = new CliProcess(['serve', '--port', '0', ...args], env);
    if (perTest) running.add(cli);
    await cli.waitFor((p) => /listening on http:\/\/\S+/.test(p.stdout), 'the gateway to listen', 30_000);
    return new Server(cli, /listening on (http:\/\/\S+)/.exec(cli.stdout)?.[1] as string);
  }

  get port(): number {
    return Number(new URL(this.url).port);
  }

  /** JSON over HTTP: a body makes it a POST unless `method` says otherwise. */
  async call<T = unknown>(path: string, init: { method?: string; body?: unknown } = {}) {
    const res = await fetch(new URL(path, this.url), {
      method: init.method ?? (init.body === undefined ? 'GET' : 'POST'),
      ...(init.body === undefined
        ? {}
        : { body: JSON.stringify(init.body), headers: { 'content-type': 'application/json' } }),
    });
    const text = await res.text();
    return { status: res.status, body: (text === '' ? undefined : JSON.parse(text)) as T };
  }
}

/** The part of an OTLP/JSON trace export the tests read. */
interface OtlpExport {
  readonly resourceSpans: readonly {
    readonly resource: { readonly attributes: readonly { key: string; value: { stringValue?: string } }[] };
    readonly scopeSpans: readonly { readonly spans: readonly { name: string; traceId: string }[] }[];
  }[];
}

const running = new Set<CliProcess>();
afterEach(() => {
  for (const cli of running)
    if (cli.child.exitCode === null && cli.child.signalCode === null) cli.child.kill('SIGKILL');
  running.clear();
});

/** Whether something accepts TCP connections on 127.0.0.1:`port`. */
function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/**
 * A POST whose body is held back: `started` resolves once the server has read the headers (it
 * answered `100 Continue`), so the request is in flight; `finish()` sends the body and resolves
 * with the answer.
 */
function heldPost(url: string, body: unknown) {
  const payload = Buffer.from(JSON.stringify(body));
  const req = request(url, {
    // Node's default agent keeps the socket open for reuse after the answer, and the server
    // waits for that idle socket until its keep-alive timeout (see the report on the gateway).
    agent: false,
    method: 'POST',
    headers: { 'content-type': 'application/json', 'content-length': payload.length, expect: '100-continue' },
  });
  const answer = new Promise<{ status: number; body: string }>((resolve, reject) => {
    req.once('error', reject);
    req.once('response', (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        text += d;
      });
      res.once('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
    });
  });
  // The server may go away before `finish()` is called; the rejection is reported there.
  answer.catch(() => {});
  const started = new Promise<void>((resolve) => req.once('continue', () => resolve()));
  req.flushHeaders();
  const finish = () => {
    req.end(payload);
    return answer;
  };
  return { started, finish };
}

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'agentbus-serve-test-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let dbs = 0;
const freshDb = () => join(dir, `bus-${dbs++}.db`);

// ---------------------------------------------------------------------------------------------
// The same HTTP and WebSocket round trips against a server on each backend.

interface Backend {
  readonly name: string;
  readonly skipReason?: string | undefined;
  /** The transport URL and environment of one server, and a test-side transport on the same store. */
  setup(): { transport: string; env: NodeJS.ProcessEnv; open: () => Transport };
}

function serverSuite(backend: Backend): void {
  describe.skipIf(backend.skipReason)(`agentbus serve on ${backend.name}`, () => {
    let server: Server;
    let open: () => Transport;
    const buses: Bus[] = [];
    beforeAll(async () => {
      const s = backend.setup();
      open = s.open;
      server = await Server.start(['--transport', s.transport], s.env, false);
    });
    afterAll(async () => {
      for (const bus of buses) await bus.close();
      server?.cli.child.kill('SIGKILL');
    });

    /** A bus on the same store as the server, as another agent process would have. */
    const agentBus = () => {
      const bus = createBus({ transport: open(), source: 'test-agent' });
      buses.push(bus);
      return bus;
    };

    it('passes its deep health check, also through `agentbus health`', async () => {
      const { status, body } = await server.call<{ status: string; checks: Record<string, unknown> }>('/health?deep=1');
      expect(status).toBe(200);
      expect(body.status).toBe('pass');
      expect(Object.keys(body.checks)).toContain('transport:roundtrip');
      const out = await agentbus(['health', '--url', server.url]);
      expect(out.code, out.stderr).toBe(0);
      expect(out.stdout).toMatch(/^pass {2}agentbus gateway/);
      expect(out.stdout).toMatch(/transport:roundtrip\s+\S+\s+pass/);
      const json = await agentbus(['health', '--url', server.url, '--json']);
      expect(JSON.parse(json.stdout)).toMatchObject({ status: 'pass', target: server.url });
    });

    it('delivers a message published over HTTP to an agent, and replays its dead letter over HTTP', async () => {
      const bus = agentBus();
      const seen: { id: string; data: unknown; attempt: number }[] = [];
      await bus.subscribe(
        'orders.>',
        async (d) => {
          seen.push({ id: d.envelope.id, data: d.envelope.data, attempt: d.attempt });
          // The first delivery is refused for good; the replayed one is accepted.
          if (seen.length === 1) throw new UnrecoverableError('first delivery refused by the test');
        },
        { group: 'serve-test-workers' },
      );
      const published = await server.call<{ id: string; topic: string }>('/v1/topics/orders.created/messages', {
        body: { data: { order: 42 } },
      });
      expect(published.status).toBe(201);
      const { id } = published.body;
      await until(() => seen.length === 1, 15_000, 'the agent to receive the message');
      expect(seen[0]).toMatchObject({ id, data: { order: 42 } });

      let record: DeadLetterView | undefined;
      await until(
        async () => {
          const list = await server.call<{ items: DeadLetterView[] }>('/v1/dead-letters?topic=orders.>');
          record = list.body.items.find((v) => v.messageId === id);
          return record !== undefined;
        },
        15_000,
        'the dead letter to show over HTTP',
      );
      expect(record).toMatchObject({ group: 'serve-test-workers', reason: 'unrecoverable', topic: 'orders.created' });
      const replay = await server.call<{ replayed: number }>(`/v1/dead-letters/${record?.id}/replay`, { body: {} });
      expect(replay).toEqual({ status: 200, body: { replayed: 1 } });
      await until(() => seen.length === 2, 15_000, 'the replayed message to reach the agent');
      expect(seen[1]?.id).toBe(id);

      const stats = await server.call<{ transport: string; topics: unknown[] }>('/v1/stats');
      expect(stats.status).toBe(200);
      expect(stats.body.transport).toBe(backend.name === 'SQLite' ? 'sqlite' : 'redis');
    });

    it('publishes a batch over HTTP, all or nothing', async () => {
      const ok = await server.call<{ ids: string[] }>('/v1/topics/batch.a/messages', {
        body: { messages: [{ data: 1 }, { data: 2, topic: 'batch.b' }] },
      });
      expect(ok.status).toBe(201);
      expect(ok.body.ids).toHaveLength(2);
      const bad = await server.call<{ error: { code: string } }>('/v1/topics/batch.a/messages', {
        body: { messages: [{ data: 1 }, { data: 2, topic: 'bad..topic' }] },
      });
      expect(bad.status).toBe(400);
      expect(bad.body.error.code).toBe('VALIDATION');
    });

    it('WebSocket: receives what HTTP published, publishes, and gets what was published while it was away', async () => {
      const connect = async (autoAck: boolean) => {
        const ws = new WebSocket(`${server.url.replace(/^http/, 'ws')}/v1/ws`);
        const frames: Record<string, unknown>[] = [];
        ws.on('message', (raw) => {
          const frame = JSON.parse(String(raw)) as Record<string, unknown>;
          frames.push(frame);
          // Acked as they come: the subscription's prefetch bounds what is unsettled.
          if (autoAck && frame.op === 'message') ws.send(JSON.stringify({ op: 'ack', delivery: frame.delivery }));
        });
        await new Promise<void>((resolve, reject) => {
          ws.once('open', () => resolve());
          ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade refused: ${res.statusCode}`)));
          ws.once('error', reject);
        });
        ws.send(JSON.stringify({ op: 'subscribe', id: 's1', topic: 'ws.>', durable: 'serve-test-ws' }));
        await until(() => frames.some((f) => f.op === 'subscribed'), 15_000, 'subscribed');
        return { ws, frames };
      };
      type MessageFrame = { delivery: string; envelope: { id: string; data: unknown } };
      const messages = (frames: Record<string, unknown>[]) =>
        frames.filter((f) => f.op === 'message') as unknown as MessageFrame[];

      const first = await connect(false);
      const published = await server.call<{ id: string }>('/v1/topics/ws.hello/messages', { body: { data: 'hi' } });
      expect(published.status).toBe(201);
      await until(() => messages(first.frames).length === 1, 15_000, 'the message frame');
      expect(messages(first.frames)[0]?.envelope.id).toBe(published.body.id);
      first.ws.send(JSON.stringify({ op: 'ack', delivery: messages(first.frames)[0]?.delivery }));
      first.ws.send(JSON.stringify({ op: 'publish', id: 'p1', topic: 'ws.own', data: { n: 0 } }));
      await until(() => messages(first.frames).length === 2, 15_000, 'its own publish delivered');
      const own = first.frames.find((f) => f.op === 'published' && f.id === 'p1') as { msgId: string };
      expect(messages(first.frames)[1]?.envelope.id).toBe(own.msgId);
      first.ws.send(JSON.stringify({ op: 'ack', delivery: messages(first.frames)[1]?.delivery }));
      // A ping answered after the acks means the server has read them.
      first.ws.send(JSON.stringify({ op: 'ping', id: 'z' }));
      await until(() => first.frames.some((f) => f.op === 'pong'), 15_000, 'pong');
      first.ws.close();

      // Away: 20 messages; the durable subscription keeps them for the next connection.
      const away = await server.call<{ ids: string[] }>('/v1/topics/ws.away/messages', {
        body: { messages: Array.from({ length: 20 }, (_, n) => ({ data: { n } })) },
      });
      expect(away.status).toBe(201);
      const second = await connect(true);
      try {
        await until(() => messages(second.frames).length >= 20, 15_000, '20 messages after reconnecting');
        const got = messages(second.frames).map((f) => (f.envelope.data as { n: number }).n);
        expect([...got].sort((a, b) => a - b)).toEqual(Array.from({ length: 20 }, (_, n) => n));
      } finally {
        second.ws.close();
      }
    });
  });
}

serverSuite({
  name: 'SQLite',
  setup: () => {
    const path = freshDb();
    return { transport: `sqlite:${path}`, env: {}, open: () => sqliteTransport({ path }) };
  },
});

const REDIS_URL = process.env.AGENTBUS_REDIS_URL ?? 'redis://127.0.0.1:6379';
const redisSkip = await serverSkipReason('Redis', REDIS_URL, 6379);
const redisPrefix = `agentbus-serve-test-${process.pid}-${Date.now().toString(36)}`;
afterAll(async () => {
  if (redisSkip) return;
  // Everything the server and the test agents created lives under the prefix.
  const redis = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1 });
  await redis.connect();
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${redisPrefix}*`, 'COUNT', 500);
    cursor = next;
    if (keys.length > 0) await redis.del(...keys);
  } while (cursor !== '0');
  await redis.quit();
});

serverSuite({
  name: 'Redis',
  skipReason: redisSkip,
  setup: () => ({
    transport: REDIS_URL,
    env: { AGENTBUS_REDIS_KEY_PREFIX: redisPrefix },
    open: () => redisTransport({ url: REDIS_URL, keyPrefix: redisPrefix, pollIntervalMs: 50 }),
  }),
});

// ---------------------------------------------------------------------------------------------
// Configuration and lifecycle of the server process (SQLite).

describe('agentbus serve configuration and shutdown', () => {
  it('refuses a bad configuration with one line naming the field and its source, exit 2, nothing opened', async () => {
    const db = freshDb();
    const out = await agentbus(['serve', '--transport', `sqlite:${db}`, '--port', '0'], {
      AGENTBUS_WS_MAX_FRAME_BYTES: 'big',
    });
    expect(out.code).toBe(2);
    expect(out.stdout).toBe('');
    expect(out.stderr.trim()).toBe(
      'error: CONFIG: ws.maxFrameBytes (from AGENTBUS_WS_MAX_FRAME_BYTES): must be a positive integer, got "big"',
    );
    expect(existsSync(db)).toBe(false);
  });

  it('finishes a request in flight on SIGTERM, exits 143 and closes the port', async () => {
    const server = await Server.start(['--transport', `sqlite:${freshDb()}`]);
    const held = heldPost(`${server.url}/v1/topics/drain.test/messages`, { data: { late: true } });
    await held.started;
    server.cli.child.kill('SIGTERM');
    await server.cli.waitFor((p) => p.stderr.includes('shutting down'), 'the gateway to start draining');
    // The port no longer accepts while the request in flight is still answered.
    expect(await portOpen(server.port)).toBe(false);
    const answer = await held.finish();
    expect(answer.status).toBe(201);
    expect(JSON.parse(answer.body)).toMatchObject({ topic: 'drain.test' });
    const out = await server.cli.exit();
    expect(out.code).toBe(143);
    expect(out.stderr).not.toMatch(/error:/);
    expect(await portOpen(server.port)).toBe(false);
  });

  it('dies at once on a second signal while the first one still drains', async () => {
    const server = await Server.start(['--transport', `sqlite:${freshDb()}`]);
    const held = heldPost(`${server.url}/v1/topics/drain.test/messages`, { data: 1 });
    await held.started;
    server.cli.child.kill('SIGTERM');
    // The held request keeps the drain waiting (up to drainTimeoutMs, 10 s by default).
    await server.cli.waitFor((p) => p.stderr.includes('shutting down'), 'the gateway to start draining');
    server.cli.child.kill('SIGTERM');
    const out = await server.cli.exit(5_000);
    expect(out.signal).toBe('SIGTERM');
    expect(out.stderr).not.toContain('gateway closed');
    await expect(held.finish()).rejects.toThrow();
  });

  it('exits 130 on SIGINT after closing the gateway, the bus and the transport', async () => {
    const server = await Server.start(['--transport', `sqlite:${freshDb()}`]);
    server.cli.child.kill('SIGINT');
    const out = await server.cli.exit();
    expect(out.code).toBe(130);
    expect(out.stderr).toContain('gateway closed');
    expect(await portOpen(server.port)).toBe(false);
  });

  it('logs JSON lines on stderr and prints only the listening line on stdout', async () => {
    const server = await Server.start(['--transport', `sqlite:${freshDb()}`, '--log-level', 'info']);
    expect(server.cli.stdout).toBe(`agentbus gateway listening on ${server.url} — dashboard: ${server.url}/\n`);
    const lines = server.cli.stderr.trim().split('\n');
    for (const line of lines) expect(() => JSON.parse(line)).not.toThrow();
    server.cli.child.kill('SIGTERM');
    await server.cli.exit();
  });

  /**
   * A stand-in OpenTelemetry collector (a real HTTP server taking OTLP trace exports) and a
   * `serve` process exporting to it with `protocol`; runs `check` with what it received, after
   * one HTTP publish on `topic` in a trace of the caller's.
   */
  async function withCollector(
    protocol: 'http/json' | 'http/protobuf',
    topic: string,
    check: (received: { contentType: string; body: Buffer }[], traceId: string) => boolean,
  ): Promise<{ contentTypes: string[]; received: { contentType: string; body: Buffer }[]; traceId: string }> {
    const received: { contentType: string; body: Buffer }[] = [];
    const collector = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        if (req.url === '/v1/traces')
          received.push({ contentType: String(req.headers['content-type']), body: Buffer.concat(chunks) });
        res.writeHead(200, { 'content-type': String(req.headers['content-type']) }).end();
      });
    });
    await new Promise<void>((resolve) => collector.listen(0, '127.0.0.1', resolve));
    const { port } = collector.address() as AddressInfo;
    try {
      const server = await Server.start(['--transport', `sqlite:${freshDb()}`], {
        OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${port}`,
        OTEL_EXPORTER_OTLP_PROTOCOL: protocol,
        OTEL_SERVICE_NAME: 'gateway-under-test',
        OTEL_BSP_SCHEDULE_DELAY: '100',
      });
      const traceId = randomBytes(16).toString('hex');
      const res = await fetch(`${server.url}/v1/topics/${topic}/messages`, {
        method: 'POST',
        body: JSON.stringify({ data: { n: 1 } }),
        headers: { 'content-type': 'application/json', traceparent: `00-${traceId}-${'ab'.repeat(8)}-01` },
      });
      expect(res.status).toBe(201);
      await until(() => check(received, traceId), 20_000, `the ${protocol} export at the collector`);
      server.cli.child.kill('SIGTERM');
      const out = await server.cli.exit();
      expect(out.code).toBe(143);
      expect(out.stderr).toContain('exporting spans over OTLP');
      return { contentTypes: [...new Set(received.map((r) => r.contentType))], received, traceId };
    } finally {
      await new Promise((resolve) => collector.close(resolve));
    }
  }

  it("exports its spans over OTLP/HTTP JSON to OTEL_EXPORTER_OTLP_ENDPOINT, in the caller's trace", async () => {
    const spans = (received: { body: Buffer }[]) =>
      received.flatMap(({ body }) =>
        (JSON.parse(body.toString('utf8')) as OtlpExport).resourceSpans.flatMap((r) =>
          r.scopeSpans.flatMap((s) =>
            s.spans.map((span) => ({
              name: span.name,
              traceId: span.traceId,
              service: r.resource.attributes.find((a) => a.key === 'service.name')?.value.stringValue,
            })),
          ),
        ),
      );
    const { contentTypes, received, traceId } = await withCollector('http/json', 'otel.json', (got, id) =>
      spans(got).some((s) => s.traceId === id && s.name === 'otel.json publish'),
    );
    expect(contentTypes).toEqual(['application/json']);
    const ours = spans(received).filter((s) => s.traceId === traceId);
    expect(ours.map((s) => s.name)).toContain('POST /v1/topics/:topic/messages');
    expect(new Set(ours.map((s) => s.service))).toEqual(new Set(['gateway-under-test']));
  });

  it('exports over OTLP/HTTP protobuf, the default protocol', async () => {
    // The trace id travels as its 16 raw bytes, names as UTF-8: both are in the body as they are.
    const has = (got: { body: Buffer }[], id: string, text: string) =>
      got.some(({ body }) => body.includes(Buffer.from(id, 'hex')) && body.includes(Buffer.from(text)));
    const { contentTypes, received, traceId } = await withCollector('http/protobuf', 'otel.proto', (got, id) =>
      has(got, id, 'otel.proto publish'),
    );
    expect(contentTypes).toEqual(['application/x-protobuf']);
    expect(has(received, traceId, 'gateway-under-test')).toBe(true);
  });

  it('refuses an OTEL_TRACES_EXPORTER it cannot serve, exit 2', async () => {
    const out = await agentbus(['serve', '--transport', `sqlite:${freshDb()}`, '--port', '0'], {
      OTEL_TRACES_EXPORTER: 'zipkin',
    });
    expect(out.code).toBe(2);
    expect(out.stderr.trim()).toMatch(/^error: CONFIG: .*OTEL_TRACES_EXPORTER.*must be otlp or none/);
  });

  it('health exits 1 when the gateway is unreachable', async () => {
    const server = await Server.start(['--transport', `sqlite:${freshDb()}`]);
    const { url } = server;
    server.cli.child.kill('SIGTERM');
    await server.cli.exit();
    const out = await agentbus(['health', '--url', url]);
    expect(out.code).toBe(1);
    expect(out.stderr.trim()).toMatch(/^error: CONNECTION: gateway at http:\/\/127\.0\.0\.1:\d+ is unreachable/);
  });

  it('health --transport checks the transport directly', async () => {
    const out = await agentbus(['--transport', `sqlite:${freshDb()}`, 'health', '--json']);
    expect(out.code, out.stderr).toBe(0);
    expect(JSON.parse(out.stdout)).toMatchObject({ status: 'pass', serviceId: 'sqlite' });
  });
});
