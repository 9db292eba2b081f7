import { createPolicy } from '@agentbus/core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { jwtPair, memoryFixture, type RunningGateway, startGateway, uniqueTopic } from './gateway-fixtures.js';
import { ClientPool, connectWs } from './ws-helpers.js';

describe('WebSocket authentication and permissions', () => {
  const { issuer, verifier } = jwtPair();
  const policy = createPolicy({
    roles: {
      agent: {
        rules: [
          { actions: ['subscribe', 'publish'], patterns: ['orders.>'] },
          { actions: ['request'], patterns: ['quotes.>'] },
        ],
      },
    },
  });
  let gw: RunningGateway;
  const pool = new ClientPool();
  beforeAll(async () => {
    gw = await startGateway(memoryFixture(), { auth: { verifier, policy } });
  });
  afterEach(() => pool.closeAll());
  afterAll(async () => {
    await gw?.stop();
  });

  const token = (subject = 'agent-1', ttlMs?: number) =>
    issuer.issue({ subject, roles: ['agent'] }, ttlMs === undefined ? {} : { ttlMs });

  it('authenticates with ?token=, an Authorization header or an auth frame', async () => {
    const t = await token();
    const byQuery = await pool.open(gw.url, { query: `?token=${encodeURIComponent(t)}` });
    const byHeader = await pool.open(gw.url, { headers: { authorization: `Bearer ${t}` } });
    const byFrame = await pool.open(gw.url);
    expect(await byFrame.call({ op: 'auth', token: t })).toMatchObject({
      op: 'authenticated',
      subject: 'agent-1',
      expiresAtMs: expect.any(Number),
    });
    for (const c of [byQuery, byHeader, byFrame]) {
      expect(await c.call({ op: 'subscribe', topic: uniqueTopic('orders') })).toMatchObject({ op: 'subscribed' });
    }
    expect(gw.gateway.context.connections.list().map((i) => i.subject)).toEqual(['agent-1', 'agent-1', 'agent-1']);
  });

  it('runs frames sent right behind the auth frame once it succeeded', async () => {
    const c = await pool.open(gw.url);
    c.send({ op: 'auth', id: 'a', token: await token('pipeliner') });
    c.send({ op: 'subscribe', id: 's', topic: uniqueTopic('orders') });
    c.send({ op: 'ping', id: 'p' });
    expect(await c.waitFor((f) => f.id === 's')).toMatchObject({ op: 'subscribed' });
    expect(await c.waitFor((f) => f.id === 'p')).toMatchObject({ op: 'pong' });
    expect(c.frames[0]).toMatchObject({ op: 'authenticated', id: 'a', subject: 'pipeliner' });
  });

  it('refuses any other frame before auth with UNAUTHORIZED and closes 4401', async () => {
    for (const first of [{ op: 'ping', id: 'p' }, 'not json', { op: 'subscribe', topic: 'orders.x' }]) {
      const c = await pool.open(gw.url);
      c.send(first);
      expect(await c.waitFor((f) => f.op === 'error')).toMatchObject({ code: 'UNAUTHORIZED' });
      expect(await c.closed).toEqual({ code: 4401, reason: 'unauthorized' });
    }
  });

  it('closes 4401 on an invalid token, whether in the query or an auth frame', async () => {
    const q = await pool.open(gw.url, { query: '?token=a.b.c' });
    expect(await q.waitFor((f) => f.op === 'error')).toMatchObject({ code: 'UNAUTHORIZED' });
    expect((await q.closed).code).toBe(4401);
    const foreign = await jwtPair().issuer.issue({ subject: 'mallory', roles: ['agent'] });
    const f = await pool.open(gw.url);
    f.send({ op: 'auth', id: 'a', token: foreign });
    expect(await f.waitFor((x) => x.id === 'a')).toMatchObject({ op: 'error', code: 'UNAUTHORIZED' });
    expect((await f.closed).code).toBe(4401);
  });

  it('closes a socket within a second of its token expiring (token-expired)', async () => {
    const t = await token('short-lived', 1_000);
    const c = await pool.open(gw.url);
    const { expiresAtMs } = await c.call({ op: 'auth', token: t });
    const closed = await c.closed;
    const lateMs = Date.now() - expiresAtMs;
    expect(closed).toEqual({ code: 4401, reason: 'token-expired' });
    expect(lateMs).toBeGreaterThanOrEqual(0);
    expect(lateMs).toBeLessThan(1_000);
  });

  it('closes a socket within a second of its subject being revoked (token-revoked)', async () => {
    const c = await pool.open(gw.url, { query: `?token=${await token('to-revoke')}` });
    const other = await pool.open(gw.url, { query: `?token=${await token('stays')}` });
    expect(await c.call({ op: 'ping' })).toMatchObject({ op: 'pong' });
    const revokedAt = Date.now();
    gw.gateway.context.auth.revoke('to-revoke');
    expect(await c.closed).toEqual({ code: 4401, reason: 'token-revoked' });
    expect(Date.now() - revokedAt).toBeLessThan(1_000);
    expect(await other.call({ op: 'ping' })).toMatchObject({ op: 'pong' });
    await expect(
      connectWs(gw.url, { query: `?token=${await token('to-revoke')}` }).then((x) => x.closed),
    ).resolves.toEqual({
      code: 4401,
      reason: 'unauthorized',
    });
  });

  it('enforces topic permissions with FORBIDDEN frames and stamps the subject as source', async () => {
    const c = await pool.open(gw.url, { query: `?token=${await token('agent-9')}` });
    expect(await c.call({ op: 'subscribe', topic: 'billing.>' })).toMatchObject({
      op: 'error',
      code: 'FORBIDDEN',
      data: { action: 'subscribe', principal: 'agent-9' },
    });
    expect(await c.call({ op: 'publish', topic: 'billing.charge', data: 1 })).toMatchObject({
      code: 'FORBIDDEN',
      data: { action: 'publish' },
    });
    expect(await c.call({ op: 'request', topic: 'orders.quote', data: 1 })).toMatchObject({
      code: 'FORBIDDEN',
      data: { action: 'request' },
    });
    const topic = uniqueTopic('orders');
    const { sub } = await c.call({ op: 'subscribe', topic });
    const pub = await c.call({ op: 'publish', topic, data: 'mine', source: 'someone-else' });
    const msg = await c.waitFor((f) => f.op === 'message' && f.sub === sub);
    expect(msg.envelope).toMatchObject({ id: pub.msgId, source: 'agent-9' });
    c.send({ op: 'ack', delivery: msg.delivery });
    // No `reply` permission on orders.>: answering a request is refused and the delivery stays pending.
    const asked = gw.bus.request(topic, 'q', { timeoutMs: 2_000 }).catch((e: unknown) => e);
    const req = await c.waitFor((f) => f.op === 'message' && f.sub === sub && f.envelope.data === 'q');
    expect(await c.call({ op: 'reply', delivery: req.delivery, data: 'a' })).toMatchObject({
      code: 'FORBIDDEN',
      data: { action: 'reply' },
    });
    expect(await asked).toMatchObject({ code: 'TIMEOUT' });
    // The delivery is still pending: it can be acked (settles answer only when they fail).
    c.send({ op: 'ack', id: 'late-ack', delivery: req.delivery });
    await c.call({ op: 'ping' });
    expect(c.frames.some((f) => f.id === 'late-ack')).toBe(false);
  });

  it("scopes a client's group names to its subject: no joining another service's group, sharing within a subject", async () => {
    const topic = uniqueTopic('orders');
    const secret = uniqueTopic('orders');
    // A backend consumes `secret` in group `billing`, and is away for a moment: the group keeps its messages.
    const backend = await gw.bus.subscribe(secret, () => {}, { group: 'billing' });
    await backend.close();
    await gw.bus.publish(secret, { card: '4111-secret' });

    const mallory = await pool.open(gw.url, { query: `?token=${await token('mallory')}` });
    const joined = await mallory.call({ op: 'subscribe', topic, group: 'billing' });
    expect(joined).toMatchObject({ op: 'subscribed', group: '_u.mallory.billing' });
    const durable = await mallory.call({ op: 'subscribe', topic, durable: 'billing' });
    expect(durable.group).toBe('_u.mallory.billing');
    // Two sockets of one subject share the group (competing consumers); the backend's group is untouched.
    const again = await pool.open(gw.url, { query: `?token=${await token('mallory')}` });
    expect((await again.call({ op: 'subscribe', topic, group: 'billing' })).group).toBe('_u.mallory.billing');
    await gw.bus.publish(topic, 'for mallory');
    const got = await Promise.race([
      mallory.waitFor((f) => f.op === 'message'),
      again.waitFor((f) => f.op === 'message'),
    ]);
    expect(got.envelope.topic).toBe(topic);
    await mallory.call({ op: 'ping' });
    await again.call({ op: 'ping' });
    const all = [...mallory.frames, ...again.frames].filter((f) => f.op === 'message');
    expect(all.map((f) => f.envelope.topic)).toEqual([topic]); // once, and never the secret
    expect((await gw.bus.transport.groupStats?.('billing'))?.backlog).toBe(1);
    // A subject that cannot head a group name gets an opaque, collision-free owner instead.
    const odd = await pool.open(gw.url, { query: `?token=${await token('team/a.b')}` });
    expect((await odd.call({ op: 'subscribe', topic, group: 'billing' })).group).toMatch(/^_u\.u-[\w-]{22}\.billing$/);
    // A subject that looks like a hashed owner is hashed too: the two namespaces never meet.
    const lookalike = await pool.open(gw.url, { query: `?token=${await token('u-n3pfbaMzV9FBXvjNC0EUcN')}` });
    const scoped = (await lookalike.call({ op: 'subscribe', topic, group: 'x' })).group;
    expect(scoped).toMatch(/^_u\.u-[\w-]{22}\.x$/);
    expect(scoped).not.toBe('_u.u-n3pfbaMzV9FBXvjNC0EUcN.x');
  });

  it('refuses a different subject on re-authentication and accepts a fresh token of the same one', async () => {
    const c = await pool.open(gw.url, { query: `?token=${await token('me')}` });
    expect(await c.call({ op: 'auth', token: await token('me') })).toMatchObject({
      op: 'authenticated',
      subject: 'me',
    });
    expect(await c.call({ op: 'auth', token: await token('you') })).toMatchObject({ op: 'error', code: 'FORBIDDEN' });
    expect(await c.call({ op: 'ping' })).toMatchObject({ op: 'pong' });
  });
});

describe('WebSocket Origin allowlist', () => {
  const gws: RunningGateway[] = [];
  afterAll(async () => {
    for (const g of gws) await g.stop();
  });

  async function upgradeStatus(url: string, origin?: string): Promise<number> {
    try {
      const c = await connectWs(url, { headers: origin === undefined ? {} : { origin } });
      await c.close();
      return 101;
    } catch (err) {
      return Number(/(\d{3})/.exec(String(err))?.[1] ?? 0);
    }
  }

  it('allows no Origin and the same host by default, and refuses others with 403', async () => {
    const gw = await startGateway(memoryFixture());
    gws.push(gw);
    const host = new URL(gw.url).host;
    expect(await upgradeStatus(gw.url)).toBe(101);
    expect(await upgradeStatus(gw.url, `http://${host}`)).toBe(101);
    expect(await upgradeStatus(gw.url, 'https://evil.example')).toBe(403);
    expect(await upgradeStatus(gw.url, 'null')).toBe(403);
  });

  it('allows exactly the listed origins, or any with *', async () => {
    const listed = await startGateway(memoryFixture(), { ws: { allowedOrigins: ['https://app.example'] } });
    const any = await startGateway(memoryFixture(), { ws: { allowedOrigins: ['*'] } });
    gws.push(listed, any);
    expect(await upgradeStatus(listed.url, 'https://app.example')).toBe(101);
    expect(await upgradeStatus(listed.url, 'https://other.example')).toBe(403);
    expect(await upgradeStatus(listed.url)).toBe(101);
    expect(await upgradeStatus(any.url, 'https://other.example')).toBe(101);
  });
});
