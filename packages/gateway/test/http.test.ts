import { connect } from 'node:net';
import { until } from '@agentbus/conformance';
import { createPolicy, type Envelope, UnrecoverableError } from '@agentbus/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  del,
  embeddedAndRedisFixtures,
  get,
  type Json,
  jwtPair,
  memoryFixture,
  post,
  type RunningGateway,
  startGateway,
  uniqueTopic,
} from './gateway-fixtures.js';

const fixtures = await embeddedAndRedisFixtures('http');

describe.each(fixtures)('HTTP API on $name', (fixture) => {
  let gw: RunningGateway;
  beforeAll(async () => {
    if (fixture.skipReason) return;
    gw = await startGateway(fixture);
  });
  afterAll(async () => {
    await gw?.stop();
  });
  const run = fixture.skipReason ? it.skip : it;

  run('publishes one message, durable once answered, and a subscriber receives it', async () => {
    const topic = uniqueTopic('orders');
    const seen: Envelope[] = [];
    const sub = await gw.bus.subscribe(topic, (d) => {
      seen.push(d.envelope);
    });
    const res = await post(`${gw.url}/v1/topics/${topic}/messages`, {
      data: { n: 1 },
      type: 'order.placed',
      correlationid: 'c-1',
      headers: { tenant: 'acme' },
    });
    expect(res.status).toBe(201);
    expect(typeof res.body.id).toBe('string');
    await until(() => seen.length === 1, 10_000, 'delivery');
    expect(seen[0]).toMatchObject({
      id: res.body.id,
      topic,
      type: 'order.placed',
      data: { n: 1 },
      correlationid: 'c-1',
      source: 'gateway',
      headers: { tenant: 'acme' },
    });
    await sub.close();
  });

  run('publishes a batch all or nothing', async () => {
    const topic = uniqueTopic('batch');
    const seen: unknown[] = [];
    const sub = await gw.bus.subscribe(topic, (d) => {
      seen.push(d.data);
    });
    const bad = await post(`${gw.url}/v1/topics/${topic}/messages`, {
      messages: [{ data: 1 }, { data: 2, priority: 'high' }],
    });
    expect(bad.status).toBe(400);
    expect(bad.body.error).toMatchObject({ code: 'VALIDATION', data: { path: 'messages[1].priority' } });
    const ok = await post(`${gw.url}/v1/topics/${topic}/messages`, {
      messages: [{ data: 1 }, { data: 2 }, { data: 3 }],
    });
    expect(ok.status).toBe(201);
    expect(ok.body.ids).toHaveLength(3);
    await until(() => seen.length === 3, 10_000, 'batch delivery');
    expect(seen.sort()).toEqual([1, 2, 3]);
    await sub.close();
  });

  run('answers bad requests with 4xx and a machine-readable code', async () => {
    const topic = uniqueTopic('bad');
    const cases: [unknown, number, string][] = [
      ['{not json', 400, 'INVALID_JSON'],
      [{ nodata: 1 }, 400, 'VALIDATION'],
      [{ data: 1, extra: true }, 400, 'VALIDATION'],
      [{ data: 1, headers: { 'x-agentbus-sig': 'forged' } }, 400, 'VALIDATION'],
      [{ data: 1, priority: 12 }, 400, 'VALIDATION'],
      [{ data: 1, sequence: 1.5 }, 400, 'VALIDATION'],
      [{ data: 1, replyto: '_inbox.someone' }, 400, 'VALIDATION'],
      [{ data: 1, replyto: 'a.*' }, 400, 'VALIDATION'],
      [{ data: 1, replyto: 'a..b' }, 400, 'VALIDATION'],
      [[1, 2], 400, 'VALIDATION'],
    ];
    for (const [body, status, code] of cases) {
      const res = await post(`${gw.url}/v1/topics/${topic}/messages`, body);
      expect({ body, status: res.status, code: res.body.error.code }).toEqual({ body, status, code });
      expect(typeof res.body.error.message).toBe('string');
    }
    const badTopic = await post(`${gw.url}/v1/topics/a..b/messages`, { data: 1 });
    expect([badTopic.status, badTopic.body.error.code]).toEqual([400, 'VALIDATION']);
    const wildcard = await post(`${gw.url}/v1/topics/a.*/messages`, { data: 1 });
    expect([wildcard.status, wildcard.body.error.code]).toEqual([400, 'VALIDATION']);
    const text = await fetch(`${gw.url}/v1/topics/${topic}/messages`, {
      method: 'POST',
      headers: { 'content-type': 'text/plain' },
      body: 'hi',
    });
    expect(text.status).toBe(415);
    expect(((await text.json()) as Json).error.code).toBe('UNSUPPORTED_MEDIA_TYPE');
    const huge = await post(`${gw.url}/v1/topics/${topic}/messages`, { data: 'x'.repeat(1_100_000) });
    expect([huge.status, huge.body.error.code]).toEqual([413, 'PAYLOAD_TOO_LARGE']);
    const missing = await get(`${gw.url}/v1/nothing-here`);
    expect([missing.status, missing.body.error.code]).toEqual([404, 'NOT_FOUND']);
  });

  run('does request-reply: reply, no responders, responder error, timeout', async () => {
    const topic = uniqueTopic('svc');
    let release = (): void => {};
    const released = new Promise<void>((r) => {
      release = r;
    });
    const sub = await gw.bus.reply(topic, async (d) => {
      const data = d.data as { op: string };
      if (data.op === 'fail') throw new UnrecoverableError('cannot do that');
      if (data.op === 'slow') await released;
      return { echo: data };
    });
    const ok = await post(`${gw.url}/v1/topics/${topic}/requests`, { data: { op: 'echo' }, timeoutMs: 10_000 });
    expect(ok).toMatchObject({ status: 200, body: { data: { echo: { op: 'echo' } } } });
    const failed = await post(`${gw.url}/v1/topics/${topic}/requests`, { data: { op: 'fail' }, timeoutMs: 10_000 });
    expect(failed.status).toBe(502);
    expect(failed.body.error.code).toBe('UNRECOVERABLE');
    const slow = await post(`${gw.url}/v1/topics/${topic}/requests`, { data: { op: 'slow' }, timeoutMs: 300 });
    expect([slow.status, slow.body.error.code]).toEqual([504, 'TIMEOUT']);
    const badTimeout = await post(`${gw.url}/v1/topics/${topic}/requests`, { data: 1, timeoutMs: 10_000_000 });
    expect([badTimeout.status, badTimeout.body.error.path ?? badTimeout.body.error.data.path]).toEqual([
      400,
      'timeoutMs',
    ]);
    if (gw.bus.transport.routeCount) {
      const none = await post(`${gw.url}/v1/topics/${uniqueTopic('nobody')}/requests`, { data: 1, timeoutMs: 1000 });
      expect([none.status, none.body.error.code]).toEqual([503, 'NO_RESPONDERS']);
    }
    release();
    await sub.close();
  });

  run('lists, searches, shows, replays and purges dead letters', async () => {
    const topic = uniqueTopic('dlq');
    const group = `g-${topic}`;
    const handled: string[] = [];
    let first = true;
    const sub = await gw.bus.subscribe(
      topic,
      (d) => {
        const data = d.data as { name: string };
        if (first && data.name === 'poison') {
          first = false;
          throw new UnrecoverableError('bad input: poison');
        }
        handled.push(data.name);
      },
      { group },
    );
    await post(`${gw.url}/v1/topics/${topic}/messages`, { data: { name: 'poison' } });
    await post(`${gw.url}/v1/topics/${topic}/messages`, { data: { name: 'fine' } });
    await until(async () => (await get(`${gw.url}/v1/dead-letters?group=${group}`)).body.items.length === 1);
    expect(handled).toEqual(['fine']);
    const list = await get(`${gw.url}/v1/dead-letters?topic=${topic}`);
    const record = list.body.items[0];
    expect(record).toMatchObject({ topic, group, reason: 'unrecoverable', envelope: { data: { name: 'poison' } } });
    expect(record.error).toContain('poison');
    const found = await get(`${gw.url}/v1/dead-letters?group=${group}&q=POISON`);
    expect(found.body.items.map((r: Json) => r.id)).toEqual([record.id]);
    const notFound = await get(`${gw.url}/v1/dead-letters?group=${group}&q=nothing-like-this`);
    expect(notFound.body.items).toEqual([]);
    const one = await get(`${gw.url}/v1/dead-letters/${encodeURIComponent(record.id)}`);
    expect(one.body.id).toBe(record.id);
    expect((await get(`${gw.url}/v1/dead-letters/no-such-id`)).status).toBe(404);
    const badFilter = await get(`${gw.url}/v1/dead-letters?limit=0`);
    expect([badFilter.status, badFilter.body.error.data.path]).toEqual([400, 'limit']);
    const unknownFilter = await get(`${gw.url}/v1/dead-letters?colour=red`);
    expect([unknownFilter.status, unknownFilter.body.error.code]).toEqual([400, 'VALIDATION']);

    const replay = await post(`${gw.url}/v1/dead-letters/${encodeURIComponent(record.id)}/replay`, {});
    expect(replay).toMatchObject({ status: 200, body: { replayed: 1 } });
    await until(() => handled.includes('poison'), 10_000, 'replayed delivery');
    expect((await get(`${gw.url}/v1/dead-letters?group=${group}`)).body.items).toEqual([]);

    // Purge: a fresh dead letter, refused without a filter, removed by id.
    first = true;
    await post(`${gw.url}/v1/topics/${topic}/messages`, { data: { name: 'poison' } });
    await until(async () => (await get(`${gw.url}/v1/dead-letters?group=${group}`)).body.items.length === 1);
    const unfiltered = await del(`${gw.url}/v1/dead-letters`);
    expect([unfiltered.status, unfiltered.body.error.data.path]).toEqual([400, 'all']);
    const [again] = (await get(`${gw.url}/v1/dead-letters?group=${group}`)).body.items;
    expect(await del(`${gw.url}/v1/dead-letters/${encodeURIComponent(again.id)}`)).toEqual({
      status: 200,
      body: { purged: 1 },
    });
    expect((await get(`${gw.url}/v1/dead-letters?group=${group}`)).body.items).toEqual([]);
    await sub.close();
  });

  run('reports health: surface, deep with every component, and stats', async () => {
    const surface = await get(`${gw.url}/health`);
    expect(surface.status).toBe(200);
    expect(surface.headers.get('content-type')).toContain('application/health+json');
    expect(surface.body.status).toBe('pass');
    const deep = await get(`${gw.url}/health?deep=1`);
    expect(deep.status).toBe(200);
    expect(deep.body.status).toBe('pass');
    expect(Object.keys(deep.body.checks).sort()).toEqual([
      'deadLetters:list',
      'gateway:connections',
      'subscriptions:open',
      'transport:roundtrip',
    ]);
    expect(deep.body.checks['transport:roundtrip'][0]).toMatchObject({
      componentId: fixture.name,
      status: 'pass',
      observedUnit: 'ms',
    });
    const topic = uniqueTopic('stats');
    await post(`${gw.url}/v1/topics/${topic}/messages`, { data: 1 });
    const stats = await get(`${gw.url}/v1/stats`);
    expect(stats.body.transport).toBe(fixture.name);
    expect(stats.body.topics.find((t: Json) => t.topic === topic)?.published).toBe(1);
    expect(stats.body.history).toHaveLength(120);
    const openapi = await get(`${gw.url}/openapi.json`);
    expect(openapi.body.openapi).toBe('3.1.0');
    expect(Object.keys(openapi.body.paths)).toContain('/v1/topics/{topic}/messages');
    expect(Object.keys(openapi.body.paths)).toContain('/v1/ws');
  });
});

describe('HTTP API with auth', () => {
  const { issuer, verifier } = jwtPair();
  const policy = createPolicy({
    roles: {
      writer: { rules: [{ actions: ['publish', 'request'], patterns: ['orders.>'] }] },
      operator: { inherits: ['writer'], rules: [{ actions: ['dlq-admin'], patterns: ['>'] }] },
      watcher: { rules: [{ actions: ['subscribe'], patterns: ['orders.>'] }] },
    },
  });
  let gw: RunningGateway;
  beforeAll(async () => {
    gw = await startGateway(memoryFixture(), { auth: { verifier, policy } });
  });
  afterAll(async () => {
    await gw?.stop();
  });

  it('asks for a token however the request target is spelt (absolute-form URL, query)', async () => {
    const { host, hostname, port } = new URL(gw.url);
    /** The status line the server answers to `method target` sent as is, with no token. */
    const statusOf = (method: string, target: string) =>
      new Promise<string>((resolve, reject) => {
        const socket = connect(Number(port), hostname, () => {
          socket.write(
            `${method} ${target} HTTP/1.1\r\nHost: ${host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`,
          );
        });
        let out = '';
        socket.on('data', (d: Buffer) => {
          out += d.toString('latin1');
        });
        socket.on('end', () => resolve(out.split('\r\n', 1)[0] as string));
        socket.on('error', reject);
      });
    const targets = [
      ['GET', '/v1/stats'],
      ['GET', `http://${host}/v1/stats`],
      ['GET', `http://${host}/v1/agents`],
      ['GET', `http://${host}/v1/dead-letters`],
      ['DELETE', `http://${host}/v1/dead-letters?all=true`],
      ['GET', `http://${host}/v1/connections`],
      ['GET', '/v1/stats?x=1'],
    ] as const;
    for (const [method, target] of targets) {
      const line = await statusOf(method, target);
      // Refused (401), or not routed at all (404): never answered.
      expect(line, `${method} ${target}`).toMatch(/^HTTP\/1\.1 (401|404) /);
    }
    expect(await statusOf('GET', `http://${host}/v1/stats`)).toMatch(/^HTTP\/1\.1 401 /);
  });

  it('refuses a missing or invalid token with 401 and says why', async () => {
    const none = await post(`${gw.url}/v1/topics/orders.a/messages`, { data: 1 });
    expect([none.status, none.body.error.code, none.body.error.data.reason]).toEqual([
      401,
      'UNAUTHORIZED',
      'missing-token',
    ]);
    expect(none.headers.get('www-authenticate')).toBe('Bearer');
    const forged = await post(`${gw.url}/v1/topics/orders.a/messages`, { data: 1 }, { authorization: 'Bearer a.b.c' });
    expect([forged.status, forged.body.error.code]).toEqual([401, 'UNAUTHORIZED']);
    const other = jwtPair();
    const foreign = await other.issuer.issue({ subject: 'mallory', roles: ['operator'] });
    const wrongKey = await post(
      `${gw.url}/v1/topics/orders.a/messages`,
      { data: 1 },
      { authorization: `Bearer ${foreign}` },
    );
    expect([wrongKey.status, wrongKey.body.error.code]).toEqual([401, 'UNAUTHORIZED']);
    // Health and the OpenAPI document stay open to probes.
    expect((await get(`${gw.url}/health`)).status).toBe(200);
    expect((await get(`${gw.url}/openapi.json`)).status).toBe(200);
  });

  it('enforces topic permissions and stamps the token subject as source', async () => {
    const token = await issuer.issue({ subject: 'agent-7', roles: ['writer'] });
    const auth = { authorization: `Bearer ${token}` };
    const seen: Envelope[] = [];
    const sub = await gw.bus.subscribe('orders.>', (d) => {
      seen.push(d.envelope);
    });
    const ok = await post(`${gw.url}/v1/topics/orders.new/messages`, { data: 1, source: 'someone-else' }, auth);
    expect(ok.status).toBe(201);
    await until(() => seen.length === 1);
    expect(seen[0]?.source).toBe('agent-7');
    const forbidden = await post(`${gw.url}/v1/topics/billing.charge/messages`, { data: 1 }, auth);
    expect(forbidden.status).toBe(403);
    expect(forbidden.body.error).toMatchObject({
      code: 'FORBIDDEN',
      data: { action: 'publish', topic: 'billing.charge', principal: 'agent-7' },
    });
    const dlq = await get(`${gw.url}/v1/dead-letters`, auth);
    expect([dlq.status, dlq.body.error.data.action]).toEqual([403, 'dlq-admin']);
    const opToken = await issuer.issue({ subject: 'ops', roles: ['operator'] });
    expect((await get(`${gw.url}/v1/dead-letters`, { authorization: `Bearer ${opToken}` })).status).toBe(200);
    await sub.close();
  });

  it('shows stats in full to an operator and only what a caller may use to anyone else', async () => {
    const orders = uniqueTopic('orders');
    const billing = uniqueTopic('billing');
    // A WebSocket client's scoped group (subject watcher-1) and two backend groups.
    const groups = ['_u.watcher-1.jobs', 'shared.ops', 'billing-internal'];
    const seen: string[] = [];
    const subs = await Promise.all(
      groups.map((group) =>
        gw.bus.subscribe(
          group === 'billing-internal' ? billing : orders,
          () => {
            seen.push(group);
          },
          { group },
        ),
      ),
    );
    await gw.bus.publish(orders, 1);
    await gw.bus.publish(billing, 2);
    await until(() => seen.length === 3, 5_000, 'the three deliveries');
    const statsOf = async (subject: string, roles: string[]) => {
      const res = await get(`${gw.url}/v1/stats`, {
        authorization: `Bearer ${await issuer.issue({ subject, roles })}`,
      });
      expect(res.status).toBe(200);
      const body = res.body as {
        scope: string;
        topics: { topic: string }[];
        groups: { group: string }[];
        connections?: number;
        history?: unknown[];
      };
      // The gateway-wide figures are the operator's only.
      expect([typeof body.connections, Array.isArray(body.history)]).toEqual(
        body.scope === 'all' ? ['number', true] : ['undefined', false],
      );
      return {
        scope: body.scope,
        topics: body.topics.map((t) => t.topic).filter((t) => t === orders || t === billing),
        groups: body.groups.map((g) => g.group).filter((g) => groups.includes(g)),
      };
    };
    expect(await statsOf('ops', ['operator'])).toEqual({
      scope: 'all',
      topics: [billing, orders].sort(),
      groups: [...groups].sort(),
    });
    // Its own scoped groups; the topics it may subscribe or publish to.
    expect(await statsOf('watcher-1', ['watcher'])).toEqual({
      scope: 'caller',
      topics: [orders],
      groups: ['_u.watcher-1.jobs'],
    });
    expect(await statsOf('agent-2', ['writer'])).toEqual({ scope: 'caller', topics: [orders], groups: [] });
    // A subject named like a backend group's head owns nothing of it.
    expect(await statsOf('shared', ['writer'])).toEqual({ scope: 'caller', topics: [orders], groups: [] });
    await Promise.all(subs.map((s) => s.close()));
  });

  it('refuses a revoked subject at once', async () => {
    const token = await issuer.issue({ subject: 'leaky', roles: ['writer'] });
    const auth = { authorization: `Bearer ${token}` };
    expect((await post(`${gw.url}/v1/topics/orders.x/messages`, { data: 1 }, auth)).status).toBe(201);
    gw.gateway.context.auth.revoke('leaky');
    const after = await post(`${gw.url}/v1/topics/orders.x/messages`, { data: 1 }, auth);
    expect([after.status, after.body.error.data.reason]).toEqual([401, 'revoked']);
  });
});
