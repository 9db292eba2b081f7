import { until } from '@agentbus/conformance';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type Json,
  jwtPair,
  memoryFixture,
  prng,
  type RunningGateway,
  startGateway,
  uniqueTopic,
} from './gateway-fixtures.js';
import { ClientPool, type WsTestClient } from './ws-helpers.js';

const SEED = Number(process.env.WS_FUZZ_SEED ?? 20261126);
const FRAMES_PER_SOCKET = 2_600;
const FUZZ_SOCKETS = 4;
const MAX_FRAME_BYTES = 16 * 1024;

/** Hostile text frames that must each be answered with exactly one error frame. */
function hostileFrames(rand: () => number, count: number): (string | Buffer)[] {
  const int = (n: number) => Math.floor(rand() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)] as T;
  const junk = (n: number) => Array.from({ length: n }, () => String.fromCharCode(32 + int(95))).join('');
  const wrong = [1, -1, 1.5, 'x', '', true, null, [], {}, [1, 2], { a: 1 }, 'x'.repeat(2_000)];
  const id = () => (rand() < 0.5 ? { id: `f${int(1e9)}` } : {});
  const nest = (depth: number) => `${'['.repeat(depth)}${']'.repeat(depth)}`;
  const makers: (() => string | Buffer)[] = [
    // not JSON at all, or truncated JSON
    () => {
      for (;;) {
        const s =
          rand() < 0.5
            ? junk(1 + int(200))
            : JSON.stringify({ op: 'publish', topic: 'a', data: junk(20) }).slice(0, 1 + int(30));
        try {
          JSON.parse(s);
        } catch {
          return s;
        }
      }
    },
    // JSON that is not an object
    () => JSON.stringify(pick([1, 'ping', null, true, [], [{ op: 'ping' }], 3.14, ''])),
    // missing or non-string op
    () => JSON.stringify({ ...id(), ...(rand() < 0.5 ? {} : { op: pick(wrong) }) }),
    // unknown op
    () =>
      JSON.stringify({
        ...id(),
        op: `${pick(['Ping', 'PUBLISH', 'sub', 'drop', 'eval', 'constructor', '__proto__'])}${junk(int(4))}`,
      }),
    // a field of the wrong type
    () => {
      const [op, field] = pick([
        ['subscribe', 'topic'],
        ['subscribe', 'prefetch'],
        ['subscribe', 'durable'],
        ['publish', 'topic'],
        ['request', 'topic'],
        ['request', 'timeoutMs'],
        ['ack', 'delivery'],
        ['nack', 'delayMs'],
        ['unsubscribe', 'sub'],
        ['reply', 'error'],
      ] as const);
      const bad = pick(wrong.filter((w) => typeof w !== 'string' || (field !== 'error' && w === '')));
      return JSON.stringify({ ...id(), op, topic: 'fz.t', delivery: 's1:1', data: 1, sub: 's1', [field]: bad });
    },
    // a bad id
    () => JSON.stringify({ op: 'ping', id: pick([1, true, null, {}, [], '', 'x'.repeat(129)]) }),
    // unknown fields
    () =>
      JSON.stringify({
        ...id(),
        op: pick(['ping', 'ack', 'subscribe', 'publish']),
        topic: 'fz.t',
        delivery: 's1:1',
        data: 1,
        [`x${junk(3)}`]: 1,
      }),
    // nesting past the limit
    () => `{"op":"publish","topic":"fz.t","data":${nest(65 + int(4_000))}}`,
    // prototype pollution
    () =>
      pick([
        '{"op":"publish","topic":"fz.t","data":1,"__proto__":{"polluted":true}}',
        '{"__proto__":{"polluted":true},"op":"ping"}',
        '{"op":"publish","topic":"fz.t","data":{"a":{"__proto__":{"polluted":true}}}}',
        '{"op":"publish","topic":"fz.t","data":1,"headers":{"__proto__":"x"}}',
        '{"op":"subscribe","topic":"fz.t","constructor":{"prototype":{"polluted":true}}}',
        '{"op":"publish","topic":"fz.t","data":1,"constructor":{"prototype":{"polluted":true}}}',
      ]),
    // bad topics and patterns
    () =>
      JSON.stringify({
        ...id(),
        op: pick(['publish', 'request']),
        topic: pick(['a..b', '.a', 'a.*', 'a.>', 'a b', 'x'.repeat(300), 'ü.a']),
        data: 1,
      }),
    () => JSON.stringify({ ...id(), op: 'subscribe', topic: pick(['a..b', '>.a', 'a b', '', '_inbox.>', '_inbox.x']) }),
    // settling or replying to what does not exist
    () => JSON.stringify({ ...id(), op: pick(['ack', 'nack', 'deadLetter']), delivery: `s${int(9)}:${int(1e6)}` }),
    () => JSON.stringify({ ...id(), op: 'reply', delivery: `s${int(9)}:${int(1e6)}`, data: junk(10) }),
    () => JSON.stringify({ ...id(), op: 'unsubscribe', sub: `s${int(1e6)}` }),
    // message fields the gateway refuses
    () => JSON.stringify({ ...id(), op: 'publish', topic: 'fz.t', data: 1, priority: pick(['high', null, {}]) }),
    () => JSON.stringify({ ...id(), op: 'publish', topic: 'fz.t', data: 1, headers: { 'x-agentbus-sig': 'forged' } }),
    () => JSON.stringify({ ...id(), op: 'publish', topic: 'fz.t', data: 1, replyto: '_inbox.stolen' }),
    () => JSON.stringify({ ...id(), op: 'request', topic: 'fz.t', data: 1, correlationid: 'x' }),
    // binary frames
    () => Buffer.from(Array.from({ length: 1 + int(64) }, () => int(256))),
  ];
  return Array.from({ length: count }, () => pick(makers)());
}

describe('WebSocket fuzz', () => {
  const { issuer, verifier } = jwtPair();
  let gw: RunningGateway;
  const pool = new ClientPool();
  beforeAll(async () => {
    gw = await startGateway(memoryFixture(), {
      auth: { verifier },
      ws: { maxFrameBytes: MAX_FRAME_BYTES, ratePerSecond: 1_000_000, rateBurst: 1_000_000 },
    });
  });
  afterAll(async () => {
    await pool.closeAll();
    await gw?.stop();
  });

  it(`answers ${FUZZ_SOCKETS * FRAMES_PER_SOCKET} hostile frames with error frames while a legitimate client is unaffected (seed ${SEED})`, async () => {
    const rand = prng(SEED);
    const token = await issuer.issue({ subject: 'fuzzer' });
    const auth = { headers: { authorization: `Bearer ${token}` } };

    // The legitimate client: subscribes, publishes between fuzz rounds, acks what it receives.
    const legit = await pool.open(gw.url, auth);
    const topic = uniqueTopic('fz.legit');
    const received = new Set<number>();
    legit.socket.on('message', (raw) => {
      const f = JSON.parse(String(raw));
      if (f.op !== 'message') return;
      received.add(f.envelope.data.n);
      legit.send({ op: 'ack', delivery: f.delivery });
    });
    expect(await legit.call({ op: 'subscribe', topic, prefetch: 50 })).toMatchObject({ op: 'subscribed' });
    let legitSent = 0;

    const fuzzers: WsTestClient[] = [];
    for (let i = 0; i < FUZZ_SOCKETS; i++) fuzzers.push(await pool.open(gw.url, auth));
    const codes = new Map<string, number>();
    const BATCH = 200;
    for (let sent = 0; sent < FRAMES_PER_SOCKET; sent += BATCH) {
      const n = Math.min(BATCH, FRAMES_PER_SOCKET - sent);
      for (const f of fuzzers) for (const frame of hostileFrames(rand, n)) f.socket.send(frame);
      for (let k = 0; k < 5; k++) legit.send({ op: 'publish', topic, data: { n: legitSent++ } });
      for (const f of fuzzers)
        await until(() => f.frames.length >= sent + n, 10_000, `answers to ${sent + n} hostile frames`);
    }
    for (const f of fuzzers) {
      expect(f.frames).toHaveLength(FRAMES_PER_SOCKET);
      for (const frame of f.frames as Json[]) {
        expect(frame.op).toBe('error');
        expect(typeof frame.code).toBe('string');
        expect(frame.code).not.toBe('INTERNAL');
        codes.set(frame.code, (codes.get(frame.code) ?? 0) + 1);
      }
      expect(f.closeInfo).toBeUndefined();
    }
    expect([...codes.keys()].sort()).toEqual(
      expect.arrayContaining(['BAD_FRAME', 'FORBIDDEN', 'INVALID_JSON', 'NOT_FOUND', 'UNKNOWN_OP', 'VALIDATION']),
    );
    expect({} as Json).not.toHaveProperty('polluted');
    expect(Object.getPrototypeOf({})).toBe(Object.prototype);

    // Oversized frames, each on its own socket: closed 1009.
    for (let i = 0; i < 10; i++) {
      const c = await pool.open(gw.url, auth);
      c.send({ op: 'publish', topic, data: 'x'.repeat(MAX_FRAME_BYTES + Math.floor(rand() * 50_000)) });
      expect((await c.closed).code).toBe(1009);
    }
    // Invalid tokens (query, header, auth frame) and frames before auth: UNAUTHORIZED, closed 4401.
    for (let i = 0; i < 30; i++) {
      const junkToken = Buffer.from(
        Array.from({ length: 10 + Math.floor(rand() * 200) }, () => Math.floor(rand() * 256)),
      ).toString('base64url');
      const kind = i % 4;
      const forged = `${token.split('.').slice(0, 2).join('.')}.${junkToken}`;
      const c =
        kind === 0
          ? await pool.open(gw.url, { query: `?token=${junkToken}` })
          : kind === 1
            ? await pool.open(gw.url, { headers: { authorization: `Bearer ${forged}` } })
            : await pool.open(gw.url);
      if (kind === 2) c.send({ op: 'auth', token: rand() < 0.5 ? junkToken : forged });
      if (kind === 3) c.send(hostileFrames(rand, 1)[0] as string);
      expect(await c.waitFor((f) => f.op === 'error')).toMatchObject({ code: 'UNAUTHORIZED' });
      expect((await c.closed).code).toBe(4401);
    }

    // The legitimate client got every message it published, and the gateway still serves.
    await until(() => received.size === legitSent, 10_000, `${legitSent} legitimate deliveries`);
    expect(legit.frames.filter((f) => f.op === 'error')).toEqual([]);
    expect(legit.closeInfo).toBeUndefined();
    expect((await fetch(`${gw.url}/health`)).status).toBe(200);
  });
});
