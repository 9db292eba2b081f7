import { connect } from 'node:net';
import { until } from '@agentbus/conformance';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { get, jwtPair, memoryFixture, post, prng, type RunningGateway, startGateway } from './gateway-fixtures.js';

const SEED = Number(process.env.FUZZ_SEED ?? 0x5eed);
const HTTP_CASES = 10_000;
const RAW_CASES = 300;

interface Case {
  readonly method: string;
  readonly path: string;
  readonly headers: Record<string, string>;
  readonly body?: string;
}

function pick<T>(rnd: () => number, list: readonly T[]): T {
  return list[Math.floor(rnd() * list.length)] as T;
}

function junkString(rnd: () => number, max = 40): string {
  const alphabet = ['a', '.', '*', '>', '%00', '%2e%2e', '/', '\u0000', 'é', '😀', '"', '\\', ' ', '..', '_inbox', '$'];
  let s = '';
  const n = Math.floor(rnd() * max);
  for (let i = 0; i < n; i++) s += pick(rnd, alphabet);
  return s;
}

function deep(depth: number, open: string, close: string, inner = '1'): string {
  return open.repeat(depth) + inner + close.repeat(depth);
}

/** Bodies that are never a valid publish: each breaks JSON, the shape, a type or a limit. */
function badPublishBody(rnd: () => number): string {
  const k = Math.floor(rnd() * 16);
  switch (k) {
    case 0:
      return `{"data": ${junkString(rnd, 10)}`;
    case 1:
      return '';
    case 2:
      return JSON.stringify({ nodata: junkString(rnd) });
    case 3:
      return JSON.stringify({ data: 1, [junkString(rnd, 8) || 'x']: 2 });
    case 4:
      return JSON.stringify({ data: 1, priority: pick(rnd, ['9', -1, 10, 1.5, null, [], {}]) });
    case 5:
      return JSON.stringify({
        data: 1,
        headers: pick(rnd, [[], 'h', { 'x-agentbus-sig': 'forged' }, { a: 1 }, { '': 'x' }]),
      });
    case 6:
      return '{"__proto__": {"polluted": true}, "data": 1}';
    case 7:
      return '{"constructor": {"prototype": {"polluted": true}}, "data": 1}';
    case 8:
      return JSON.stringify({ data: 1, ttlMs: pick(rnd, ['soon', -5, 0, null]) });
    case 9:
      return JSON.stringify({
        messages: pick(rnd, [[], 'x', [{}], [{ data: 1 }, 7], new Array(1001).fill({ data: 1 })]),
      });
    case 10:
      return JSON.stringify({ data: 1, replyto: pick(rnd, ['_inbox.x', 'a.*', '', 'a..b']) });
    case 11:
      return JSON.stringify({ data: 1, id: pick(rnd, ['', 5, 'x'.repeat(5000)]) });
    case 12:
      return JSON.stringify(pick(rnd, [null, 5, 'str', true, [1, 2]]));
    case 13:
      return `{"data": ${deep(1 + Math.floor(rnd() * 200_000), '[', ']')}, "extra": 1}`;
    case 14:
      return JSON.stringify({ data: 'x'.repeat(1_048_600) });
    default:
      return `\u0000\u00ff${junkString(rnd)}`;
  }
}

function genCase(rnd: () => number, token: string): Case {
  const auth =
    rnd() < 0.15
      ? pick(rnd, [
          '',
          'Bearer',
          'Bearer x.y.z',
          `Bearer ${token}x`,
          'Basic Zm9vOmJhcg==',
          `Bearer ${'a'.repeat(9000)}`,
        ])
      : `Bearer ${token}`;
  const headers: Record<string, string> = auth ? { authorization: auth } : {};
  const kind = Math.floor(rnd() * 8);
  switch (kind) {
    case 0:
    case 1:
    case 2: {
      const topic = rnd() < 0.3 ? encodeURIComponent(junkString(rnd, 12) || '.') : `fuzz.t${Math.floor(rnd() * 5)}`;
      headers['content-type'] =
        rnd() < 0.85
          ? 'application/json'
          : pick(rnd, ['text/plain', 'application/xml', 'multipart/form-data', 'application/json; charset=utf-7']);
      return { method: 'POST', path: `/v1/topics/${topic}/messages`, headers, body: badPublishBody(rnd) };
    }
    case 3: {
      headers['content-type'] = 'application/json';
      const body = pick(rnd, [
        JSON.stringify({ data: 1, timeoutMs: pick(rnd, [0, -1, 'x', 1e12, 1.5]) }),
        JSON.stringify({ data: 1, replyto: 'a.b' }),
        JSON.stringify({ data: 1, correlationid: 'c' }),
        JSON.stringify({ timeoutMs: 10 }),
        '[',
      ]);
      return { method: 'POST', path: `/v1/topics/fuzz.req/requests`, headers, body };
    }
    case 4: {
      const q = pick(rnd, [
        'limit=0',
        'limit=abc',
        'limit=100000',
        'since=yesterday',
        'topic=a..b',
        'colour=red',
        `q=${'x'.repeat(300)}`,
        'until=%ff',
      ]);
      return { method: 'GET', path: `/v1/dead-letters?${q}`, headers };
    }
    case 5: {
      const id = encodeURIComponent(junkString(rnd, 20) || 'none');
      return { method: pick(rnd, ['GET', 'DELETE']), path: `/v1/dead-letters/${id}`, headers };
    }
    case 6: {
      const method = pick(rnd, ['PUT', 'PATCH', 'DELETE', 'POST', 'GET']);
      const path = pick(rnd, [
        '/v1/topics',
        '/v1',
        '/v1/stats/x',
        '/../../etc/passwd',
        '/v1/topics/a/messages/b',
        `/${junkString(rnd, 30)}`,
        '/v1/agents/%00',
      ]);
      return { method, path, headers };
    }
    default: {
      headers['content-type'] = 'application/json';
      return { method: 'DELETE', path: '/v1/dead-letters', headers };
    }
  }
}

/** Sends raw bytes that are not valid HTTP and resolves with the status line the server answers (or '' if it just closes). */
function rawExchange(port: number, bytes: string): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    let data = '';
    socket.setTimeout(5_000, () => socket.destroy());
    socket.on('data', (d) => {
      data += d.toString('latin1');
    });
    socket.on('error', () => {});
    socket.on('close', () => resolve(data.split('\r\n')[0] ?? ''));
    socket.end(bytes);
  });
}

function rawCase(rnd: () => number): string {
  return pick(rnd, [
    'GARBAGE\r\n\r\n',
    'GET / HTTP/9.9\r\n\r\n',
    `POST /v1/topics/a/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
    `GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ${'h'.repeat(20_000)}\r\n\r\n`,
    `POST /v1/topics/a/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: -1\r\n\r\n`,
    `\u0000\u0001\u0002 HTTP/1.1\r\n\r\n`,
    `GET /health HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n`,
  ]);
}

describe('HTTP fuzz', () => {
  const { issuer, verifier } = jwtPair();
  let gw: RunningGateway;
  let token = '';
  beforeAll(async () => {
    gw = await startGateway(memoryFixture(), { auth: { verifier } });
    token = await issuer.issue({ subject: 'fuzzer', roles: [] });
  });
  afterAll(async () => {
    await gw?.stop();
  });

  it(`answers ${HTTP_CASES} hostile requests and ${RAW_CASES} broken HTTP exchanges with 4xx codes while legitimate traffic flows`, async () => {
    const rnd = prng(SEED);
    const received = new Set<number>();
    let duplicates = 0;
    const sub = await gw.bus.subscribe('legit.orders', (d) => {
      const n = d.data as number;
      if (received.has(n)) duplicates++;
      received.add(n);
    });
    const LEGIT = 300;
    const legit = (async () => {
      for (let i = 0; i < LEGIT; i++) {
        const res = await post(
          `${gw.url}/v1/topics/legit.orders/messages`,
          { data: i },
          { authorization: `Bearer ${token}` },
        );
        expect(res.status).toBe(201);
      }
    })();

    const failures: string[] = [];
    const codes = new Map<string, number>();
    let next = 0;
    const worker = async () => {
      while (next < HTTP_CASES) {
        const i = next++;
        const c = genCase(rnd, token);
        const res = await fetch(`${gw.url}${c.path}`, { method: c.method, headers: c.headers, body: c.body });
        const text = await res.text();
        let code: unknown;
        try {
          code = (JSON.parse(text) as { error?: { code?: unknown } }).error?.code;
        } catch {
          code = undefined;
        }
        if (res.status < 400 || res.status >= 500 || typeof code !== 'string')
          failures.push(
            `#${i} ${c.method} ${c.path.slice(0, 80)} ${String(c.body).slice(0, 80)} → ${res.status} ${text.slice(0, 120)}`,
          );
        codes.set(`${res.status} ${String(code)}`, (codes.get(`${res.status} ${String(code)}`) ?? 0) + 1);
      }
    };
    await Promise.all(Array.from({ length: 16 }, worker));

    const port = Number(new URL(gw.url).port);
    for (let i = 0; i < RAW_CASES; i++) {
      const status = await rawExchange(port, rawCase(rnd));
      if (status !== '' && !/^HTTP\/1\.1 4\d\d /.test(status)) failures.push(`raw #${i} → ${status}`);
    }

    await legit;
    expect(failures.slice(0, 10)).toEqual([]);
    // Every kind of refusal was exercised, not one code over and over.
    expect([...codes.keys()].filter((k) => k.startsWith('4')).length).toBeGreaterThanOrEqual(6);
    await until(() => received.size === LEGIT, 10_000, 'legitimate deliveries');
    expect(duplicates).toBe(0);
    expect(({} as { polluted?: unknown }).polluted).toBeUndefined();
    const health = await get(`${gw.url}/health?deep=1`);
    expect(health.body.status).toBe('pass');
    await sub.close();
  }, 120_000);
});
