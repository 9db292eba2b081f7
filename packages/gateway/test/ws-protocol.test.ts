import { until } from '@agentbus/conformance';
import { HandlerError } from '@agentbus/core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type Json, memoryFixture, post, type RunningGateway, startGateway, uniqueTopic } from './gateway-fixtures.js';
import { ClientPool, type WsTestClient } from './ws-helpers.js';

describe('WebSocket protocol (memory)', () => {
  let gw: RunningGateway;
  const pool = new ClientPool();
  beforeAll(async () => {
    gw = await startGateway(memoryFixture(), { maxRequestTimeoutMs: 5_000 });
  });
  afterEach(() => pool.closeAll());
  afterAll(async () => {
    await gw?.stop();
  });

  async function subscribe(c: WsTestClient, frame: Record<string, unknown>): Promise<string> {
    const ans = await c.call({ op: 'subscribe', ...frame });
    expect(ans.op).toBe('subscribed');
    return ans.sub;
  }

  it('answers ping with pong echoing the id', async () => {
    const c = await pool.open(gw.url);
    expect(await c.call({ op: 'ping' })).toEqual({ op: 'pong', id: 'c1' });
  });

  it('publishes once durable, delivers with attempt and envelope, and an ack settles it', async () => {
    const c = await pool.open(gw.url);
    const topic = uniqueTopic('ws.pub');
    const subscribed = await c.call({ op: 'subscribe', topic });
    const { sub, group } = subscribed;
    expect(group).toMatch(/^_ws\./);
    const pub = await c.call({ op: 'publish', topic, data: { n: 1 }, type: 't.one', headers: { k: 'v' } });
    expect(pub).toMatchObject({ op: 'published', id: 'c2' });
    const msg = await c.waitFor((f) => f.op === 'message' && f.sub === sub);
    expect(msg).toMatchObject({
      sub,
      attempt: 1,
      envelope: { id: pub.msgId, topic, type: 't.one', data: { n: 1 }, source: 'gateway', headers: { k: 'v' } },
    });
    expect(typeof msg.delivery).toBe('string');
    c.send({ op: 'ack', delivery: msg.delivery });
    await until(async () => (await gw.bus.transport.groupStats?.(group))?.inFlight === 0, 5_000, 'ack');
    // Settling twice: the delivery is no longer known.
    const again = await c.call({ op: 'ack', delivery: msg.delivery });
    expect(again).toMatchObject({ op: 'error', code: 'NOT_FOUND', data: { delivery: msg.delivery } });
  });

  it('redelivers a nacked delivery with the next attempt, and dead-letters on deadLetter', async () => {
    const c = await pool.open(gw.url);
    const topic = uniqueTopic('ws.nack');
    const sub = await subscribe(c, { topic, durable: `d-${topic.split('.')[2]}` });
    await gw.bus.publish(topic, 'x');
    const first = await c.waitFor((f) => f.op === 'message' && f.sub === sub);
    c.send({ op: 'nack', delivery: first.delivery, delayMs: 0, error: 'try later' });
    const second = await c.waitFor((f) => f.op === 'message' && f.sub === sub && f.attempt === 2);
    expect(second.envelope.id).toBe(first.envelope.id);
    c.send({ op: 'deadLetter', delivery: second.delivery, reason: 'poison' });
    await until(async () => (await gw.bus.transport.deadLetters.list({ topic })).length === 1, 5_000, 'dead letter');
    const [dl] = await gw.bus.transport.deadLetters.list({ topic });
    expect(dl).toMatchObject({ reason: 'poison', message: { id: first.envelope.id } });
  });

  it('holds at most prefetch unacked deliveries per subscription', async () => {
    const c = await pool.open(gw.url);
    const topic = uniqueTopic('ws.prefetch');
    const sub = await subscribe(c, { topic, prefetch: 3 });
    for (let i = 0; i < 10; i++) await gw.bus.publish(topic, i);
    await until(() => c.messages(sub).length === 3, 5_000, '3 deliveries');
    for (let i = 0; i < 3; i++) await c.call({ op: 'ping' });
    expect(c.messages(sub)).toHaveLength(3);
    for (const m of c.messages(sub)) c.send({ op: 'ack', delivery: m.delivery });
    await until(() => c.messages(sub).length === 6, 5_000, '6 deliveries');
    for (let i = 0; i < 3; i++) await c.call({ op: 'ping' });
    expect(c.messages(sub)).toHaveLength(6);
  });

  it('unsubscribes: no more deliveries, and an unknown subscription is NOT_FOUND', async () => {
    const c = await pool.open(gw.url);
    const topic = uniqueTopic('ws.unsub');
    const sub = await subscribe(c, { topic });
    expect(await c.call({ op: 'unsubscribe', sub })).toEqual({ op: 'unsubscribed', id: 'c2', sub });
    expect(await c.call({ op: 'unsubscribe', sub })).toMatchObject({ op: 'error', code: 'NOT_FOUND' });
    const other = await subscribe(c, { topic });
    await gw.bus.publish(topic, 1);
    await c.waitFor((f) => f.op === 'message' && f.sub === other);
    expect(c.messages(sub)).toHaveLength(0);
  });

  it('gives unsettled deliveries back when the client disconnects: the durable group redelivers them', async () => {
    const topic = uniqueTopic('ws.release');
    const durable = `rel-${topic.split('.')[2]}`;
    const a = await pool.open(gw.url);
    const subA = await subscribe(a, { topic, durable, prefetch: 5 });
    for (let i = 0; i < 3; i++) await gw.bus.publish(topic, i);
    await until(() => a.messages(subA).length === 3, 5_000, 'first deliveries');
    await a.close();
    await until(() => gw.gateway.context.connections.size === 0, 5_000, 'release');
    const b = await pool.open(gw.url);
    const subB = await subscribe(b, { topic, durable });
    await until(() => b.messages(subB).length === 3, 5_000, 'redeliveries');
    expect(b.messages(subB).map((m: Json) => m.attempt)).toEqual([2, 2, 2]);
    expect(
      b
        .messages(subB)
        .map((m: Json) => m.envelope.data)
        .sort(),
    ).toEqual([0, 1, 2]);
  });

  it('shares a group between clients as competing consumers', async () => {
    const topic = uniqueTopic('ws.shared');
    const group = `g-${topic.split('.')[2]}`;
    const [a, b] = [await pool.open(gw.url), await pool.open(gw.url)];
    const [sa, sb] = [
      await subscribe(a, { topic, group, prefetch: 1 }),
      await subscribe(b, { topic, group, prefetch: 1 }),
    ];
    for (const [c, s] of [
      [a, sa],
      [b, sb],
    ] as const)
      c.socket.on('message', (raw) => {
        const f = JSON.parse(String(raw));
        if (f.op === 'message' && f.sub === s) c.send({ op: 'ack', delivery: f.delivery });
      });
    for (let i = 0; i < 20; i++) await gw.bus.publish(topic, i);
    await until(() => a.messages(sa).length + b.messages(sb).length === 20, 5_000, '20 deliveries');
    const all = [...a.messages(sa), ...b.messages(sb)].map((m: Json) => m.envelope.data).sort((x, y) => x - y);
    expect(all).toEqual(Array.from({ length: 20 }, (_, i) => i));
    expect(a.messages(sa).length).toBeGreaterThan(0);
    expect(b.messages(sb).length).toBeGreaterThan(0);
  });

  it('requests: a bus replier answers with data, or an error that keeps its code', async () => {
    const topic = uniqueTopic('ws.req');
    const replier = await gw.bus.reply<{ n: number }>(topic, (d) => {
      if (d.data.n < 0) throw new HandlerError('negative');
      return { doubled: d.data.n * 2 };
    });
    const c = await pool.open(gw.url);
    expect(await c.call({ op: 'request', topic, data: { n: 21 }, timeoutMs: 3_000 })).toEqual({
      op: 'reply',
      id: 'c1',
      data: { doubled: 42 },
    });
    expect(await c.call({ op: 'request', topic, data: { n: -1 } })).toMatchObject({ op: 'error', code: 'HANDLER' });
    await replier.close();
    const none = await c.call({ op: 'request', topic: uniqueTopic('ws.nobody'), data: 1, timeoutMs: 200 });
    expect(none.op).toBe('error');
    expect(['TIMEOUT', 'NO_RESPONDERS']).toContain(none.code);
  });

  it('replies to a request it received: data, or an error the requester gets as the same class', async () => {
    const topic = uniqueTopic('ws.replier');
    const c = await pool.open(gw.url);
    const sub = await subscribe(c, { topic });
    c.socket.on('message', (raw) => {
      const f = JSON.parse(String(raw));
      if (f.op !== 'message' || f.sub !== sub) return;
      if (f.envelope.data.fail)
        c.send({ op: 'reply', delivery: f.delivery, error: { code: 'TIMEOUT', message: 'model slow' } });
      else c.send({ op: 'reply', delivery: f.delivery, data: { echo: f.envelope.data } });
    });
    await expect(gw.bus.request(topic, { q: 1 }, { timeoutMs: 5_000 })).resolves.toEqual({ echo: { q: 1 } });
    await expect(gw.bus.request(topic, { fail: true }, { timeoutMs: 5_000 })).rejects.toMatchObject({
      code: 'TIMEOUT',
      message: 'model slow',
    });
    // A plain event is not a request.
    await gw.bus.publish(topic, { plain: true });
    const plain = await c.waitFor((f) => f.op === 'message' && f.envelope.data.plain === true);
    expect(await c.call({ op: 'reply', delivery: plain.delivery, data: 1 })).toMatchObject({
      code: 'VALIDATION',
      data: { path: 'delivery' },
    });
  });

  it('refuses a publish into a reply inbox, over WebSocket and HTTP: a request seen is not a reply forged', async () => {
    const topic = uniqueTopic('ws.quotes');
    const eve = await pool.open(gw.url);
    await subscribe(eve, { topic, group: `eve-${topic.split('.')[2]}` });
    const requester = await pool.open(gw.url);
    requester.send({ op: 'request', id: 'r1', topic, data: { sku: 'a' }, timeoutMs: 3_000 });
    const seen = await eve.waitFor((f) => f.op === 'message');
    const forged = { data: { price: 0 }, correlationid: seen.envelope.id, type: 'agentbus.reply' };
    expect(await eve.call({ op: 'publish', topic: seen.envelope.replyto, ...forged })).toMatchObject({
      op: 'error',
      code: 'FORBIDDEN',
      data: { action: 'publish', reason: 'inbox' },
    });
    const overHttp = await post(`${gw.url}/v1/topics/${seen.envelope.replyto}/messages`, forged);
    expect([overHttp.status, overHttp.body.error.code]).toEqual([403, 'FORBIDDEN']);
    // Nor as a request into the inbox, nor a request that reuses the pending request's id.
    expect(await eve.call({ op: 'request', topic: seen.envelope.replyto, data: 1 })).toMatchObject({
      code: 'FORBIDDEN',
      data: { action: 'request', reason: 'inbox' },
    });
    const viaHttp = await post(`${gw.url}/v1/topics/${seen.envelope.replyto}/requests`, { data: 1 });
    expect([viaHttp.status, viaHttp.body.error.code]).toEqual([403, 'FORBIDDEN']);
    expect(await eve.call({ op: 'request', topic, data: 1, msgId: seen.envelope.id })).toMatchObject({
      code: 'VALIDATION',
      data: { path: 'msgId' },
    });
    const idOverHttp = await post(`${gw.url}/v1/topics/${topic}/requests`, { data: 1, id: seen.envelope.id });
    expect([idOverHttp.status, idOverHttp.body.error.data.path]).toEqual([400, 'id']);
    // The real answer still gets through.
    eve.send({ op: 'reply', delivery: seen.delivery, data: { price: 12 } });
    expect(await requester.waitFor((f) => f.id === 'r1')).toMatchObject({ op: 'reply', data: { price: 12 } });
  });

  it('forgets the activity of an ephemeral group once its subscription is gone', async () => {
    const groups: string[] = [];
    for (let i = 0; i < 3; i++) {
      const c = await pool.open(gw.url);
      groups.push((await c.call({ op: 'subscribe', topic: uniqueTopic('ws.eph') })).group);
      await c.close();
    }
    await until(
      () => !gw.gateway.context.activity.groups().some((g) => groups.includes(g.group)),
      5_000,
      'the ephemeral groups forgotten',
    );
    expect(groups.every((g) => g.startsWith('_ws.'))).toBe(true);
  });

  it('lists the connection with its subscriptions and frame counters', async () => {
    const c = await pool.open(gw.url);
    const topic = uniqueTopic('ws.info');
    const sub = await subscribe(c, { topic, durable: `info-${topic.split('.')[2]}` });
    await c.call({ op: 'ping' });
    const info = gw.gateway.context.connections.list().find((i) => i.subscriptions.some((s) => s.id === sub));
    expect(info).toMatchObject({
      subject: 'anonymous',
      framesIn: 2,
      framesOut: 2,
      subscriptions: [{ id: sub, pattern: topic, durable: true }],
    });
    expect(info?.bufferedBytes).toBeGreaterThanOrEqual(0);
  });

  const MALFORMED: [string, string | object, string, string?][] = [
    ['text that is not JSON', 'not json', 'INVALID_JSON'],
    ['an array', '[1,2]', 'BAD_FRAME', ''],
    ['a string', '"ping"', 'BAD_FRAME', ''],
    ['no op', {}, 'BAD_FRAME', 'op'],
    ['a numeric op', { op: 1 }, 'BAD_FRAME', 'op'],
    ['a numeric id', { op: 'ping', id: 5 }, 'BAD_FRAME', 'id'],
    ['an id over 128 characters', { op: 'ping', id: 'x'.repeat(129) }, 'BAD_FRAME', 'id'],
    ['an unknown op', { op: 'fly' }, 'UNKNOWN_OP'],
    ['an unknown field', { op: 'ping', extra: 1 }, 'BAD_FRAME', 'extra'],
    ['subscribe without topic', { op: 'subscribe' }, 'BAD_FRAME', 'topic'],
    ['subscribe to a bad pattern', { op: 'subscribe', topic: 'a..b' }, 'VALIDATION', 'topic'],
    ['subscribe with prefetch 0', { op: 'subscribe', topic: 'a', prefetch: 0 }, 'BAD_FRAME', 'prefetch'],
    ['subscribe with prefetch 1001', { op: 'subscribe', topic: 'a', prefetch: 1001 }, 'BAD_FRAME', 'prefetch'],
    ['subscribe with a reserved group', { op: 'subscribe', topic: 'a', group: '_inbox.x' }, 'VALIDATION', 'group'],
    ['subscribe with a numeric durable', { op: 'subscribe', topic: 'a', durable: 7 }, 'BAD_FRAME', 'durable'],
    [
      'subscribe with group ≠ durable',
      { op: 'subscribe', topic: 'a', group: 'g', durable: 'd' },
      'VALIDATION',
      'group',
    ],
    ['subscribe to reply inboxes', { op: 'subscribe', topic: '_inbox.>' }, 'FORBIDDEN'],
    ['publish without data', { op: 'publish', topic: 'a' }, 'VALIDATION', 'data'],
    [
      'publish with a string priority',
      { op: 'publish', topic: 'a', data: 1, priority: 'high' },
      'VALIDATION',
      'priority',
    ],
    ['publish with a numeric msgId', { op: 'publish', topic: 'a', data: 1, msgId: 5 }, 'VALIDATION', 'msgId'],
    [
      'publish with a reserved header',
      { op: 'publish', topic: 'a', data: 1, headers: { 'x-agentbus-a': 'b' } },
      'VALIDATION',
      'headers.x-agentbus-a',
    ],
    ['publish to a pattern', { op: 'publish', topic: 'a.*', data: 1 }, 'VALIDATION', 'topic'],
    ['publish with an unknown field', { op: 'publish', topic: 'a', data: 1, colour: 'red' }, 'VALIDATION', 'colour'],
    [
      'publish with replyto an inbox',
      { op: 'publish', topic: 'a', data: 1, replyto: '_inbox.x' },
      'VALIDATION',
      'replyto',
    ],
    ['request with timeoutMs 0', { op: 'request', topic: 'a', data: 1, timeoutMs: 0 }, 'BAD_FRAME', 'timeoutMs'],
    [
      'request with timeoutMs over the maximum',
      { op: 'request', topic: 'a', data: 1, timeoutMs: 60_000 },
      'VALIDATION',
      'timeoutMs',
    ],
    ['request with its own replyto', { op: 'request', topic: 'a', data: 1, replyto: 'b' }, 'VALIDATION', 'replyto'],
    ['ack without delivery', { op: 'ack' }, 'BAD_FRAME', 'delivery'],
    ['ack of an unknown delivery', { op: 'ack', delivery: 's9:1' }, 'NOT_FOUND'],
    ['nack with a negative delay', { op: 'nack', delivery: 's1:1', delayMs: -1 }, 'BAD_FRAME', 'delayMs'],
    ['deadLetter with a numeric reason', { op: 'deadLetter', delivery: 's1:1', reason: 1 }, 'BAD_FRAME', 'reason'],
    [
      'reply with data and error',
      { op: 'reply', delivery: 's1:1', data: 1, error: { code: 'X', message: 'm' } },
      'BAD_FRAME',
      'data',
    ],
    [
      'reply with an error without code',
      { op: 'reply', delivery: 's1:1', error: { message: 'm' } },
      'BAD_FRAME',
      'error.code',
    ],
    ['reply without data', { op: 'reply', delivery: 's1:1' }, 'BAD_FRAME', 'data'],
    ['unsubscribe of an unknown sub', { op: 'unsubscribe', sub: 's404' }, 'NOT_FOUND'],
    ['auth without token', { op: 'auth' }, 'BAD_FRAME', 'token'],
    ['a __proto__ key', '{"op":"publish","topic":"a","data":{"__proto__":{"polluted":true}}}', 'BAD_FRAME', ''],
    [
      'nesting 100 levels deep',
      `{"op":"publish","topic":"a","data":${'['.repeat(100)}${']'.repeat(100)}}`,
      'BAD_FRAME',
      '',
    ],
  ];

  it.each(MALFORMED)('answers %s with an error frame and keeps the socket open', async (_name, frame, code, path) => {
    const c = await pool.open(gw.url);
    c.send(typeof frame === 'string' ? frame : { id: 'bad', ...frame });
    const err = await c.waitFor((f) => f.op === 'error');
    expect(err.code).toBe(code);
    expect(typeof err.message).toBe('string');
    expect(typeof err.retryable).toBe('boolean');
    if (path !== undefined) expect(err.data?.path).toBe(path);
    expect({} as Json).not.toHaveProperty('polluted');
    expect(await c.call({ op: 'ping' })).toMatchObject({ op: 'pong' });
    expect(c.closeInfo).toBeUndefined();
  });

  it('answers a binary frame with BAD_FRAME', async () => {
    const c = await pool.open(gw.url);
    c.socket.send(Buffer.from([1, 2, 3]), { binary: true });
    expect(await c.waitFor((f) => f.op === 'error')).toMatchObject({ code: 'BAD_FRAME' });
    expect(await c.call({ op: 'ping' })).toMatchObject({ op: 'pong' });
  });
});

describe('WebSocket shutdown', () => {
  it('closes every socket with 1001 on gateway close and gives their deliveries back', async () => {
    const gw = await startGateway(memoryFixture());
    const pool = new ClientPool();
    try {
      const topic = uniqueTopic('ws.shutdown');
      const c = await pool.open(gw.url);
      const { sub } = await c.call({ op: 'subscribe', topic, durable: `sd-${topic.split('.')[2]}` });
      await gw.bus.publish(topic, 1);
      await c.waitFor((f) => f.op === 'message' && f.sub === sub);
      await gw.gateway.close();
      expect(await c.closed).toEqual({ code: 1001, reason: 'server shutting down' });
      expect(gw.gateway.context.connections.size).toBe(0);
      const redelivered: number[] = [];
      const s = await gw.bus.subscribe(
        topic,
        (d) => {
          redelivered.push(d.attempt);
        },
        { group: `sd-${topic.split('.')[2]}` },
      );
      await until(() => redelivered.length === 1, 5_000, 'redelivery after shutdown');
      expect(redelivered).toEqual([2]);
      await s.close();
    } finally {
      await pool.closeAll();
      await gw.stop();
    }
  });
});
