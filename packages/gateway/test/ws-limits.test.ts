import { until } from '@agentbus/conformance';
import type { WsConnectionRegistry } from '@agentbus/gateway';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { memoryFixture, type RunningGateway, startGateway, uniqueTopic } from './gateway-fixtures.js';
import { ClientPool, WsTestClient, wsUrl } from './ws-helpers.js';

describe('WebSocket limits', () => {
  const pool = new ClientPool();
  const gws: RunningGateway[] = [];
  afterEach(async () => {
    await pool.closeAll();
    for (const g of gws.splice(0)) await g.stop();
  });
  async function gateway(ws: Parameters<typeof startGateway>[1] = {}): Promise<RunningGateway> {
    const gw = await startGateway(memoryFixture(), ws);
    gws.push(gw);
    return gw;
  }

  it('closes with 1009 on a frame over maxFrameBytes and keeps serving others', async () => {
    const gw = await gateway({ ws: { maxFrameBytes: 1024 } });
    const big = await pool.open(gw.url);
    const ok = await pool.open(gw.url);
    expect(await big.call({ op: 'publish', topic: 'a.b', data: 'x'.repeat(900) })).toMatchObject({ op: 'published' });
    big.send({ op: 'publish', topic: 'a.b', data: 'x'.repeat(2_000) });
    expect((await big.closed).code).toBe(1009);
    expect(await ok.call({ op: 'ping' })).toMatchObject({ op: 'pong' });
  });

  it('rate-limits frames per connection with RATE_LIMITED frames that are not executed', async () => {
    const gw = await gateway({ ws: { ratePerSecond: 1, rateBurst: 5 } });
    const c = await pool.open(gw.url);
    const topic = uniqueTopic('ws.rate');
    for (let i = 0; i < 10; i++) c.send({ op: 'publish', id: `p${i}`, topic, data: i });
    await until(() => c.frames.length === 10, 5_000, '10 answers');
    const published = c.frames.filter((f) => f.op === 'published');
    const limited = c.frames.filter((f) => f.op === 'error' && f.code === 'RATE_LIMITED');
    expect(published).toHaveLength(5);
    expect(limited).toHaveLength(5);
    expect(limited[0]).toMatchObject({ retryable: true, data: { retryAfterMs: expect.any(Number) } });
    expect(limited[0].data.retryAfterMs).toBeGreaterThan(0);
    // Each refusal names the frame it refused, so a client knows what to send again.
    expect(limited.map((f) => f.id).sort()).toEqual(['p5', 'p6', 'p7', 'p8', 'p9']);
    const stats = await gw.bus.transport.groupStats?.(topic);
    expect(stats?.backlog ?? 0).toBe(0); // nobody subscribed: nothing kept; what matters is 5 publishes
    expect((gw.gateway.context.connections.list()[0]?.framesIn ?? 0) >= 10).toBe(true);
  });

  it('settling a held delivery costs no token: a throttled client still consumes; a bogus ack does', async () => {
    const gw = await gateway({ ws: { ratePerSecond: 1, rateBurst: 3 } });
    const c = await pool.open(gw.url);
    const topic = uniqueTopic('ws.rate.settle');
    const { group } = await c.call({ op: 'subscribe', topic, prefetch: 5 }); // token 1
    await gw.bus.publishBatch(Array.from({ length: 30 }, (_, n) => ({ topic, data: n })));
    let acked = 0;
    await until(
      () => {
        for (const f of c.frames.filter((x) => x.op === 'message').slice(acked)) {
          c.send({ op: 'ack', delivery: f.delivery });
          acked++;
        }
        return acked === 30;
      },
      10_000,
      '30 deliveries acked under a rate of 1 frame/s',
    );
    await until(async () => ((await gw.bus.transport.groupStats?.(group))?.inFlight ?? 1) === 0, 5_000, 'acks applied');
    expect(c.frames.filter((f) => f.op === 'error')).toEqual([]);
    // Acks of deliveries it does not hold are frames like any other: two more tokens, then refused.
    for (let i = 0; i < 4; i++) c.send({ op: 'ack', delivery: `nope:${i}` });
    await until(() => c.frames.filter((f) => f.op === 'error').length === 4, 5_000, '4 answers');
    const codes = c.frames.filter((f) => f.op === 'error').map((f) => f.code);
    expect(codes.filter((x) => x === 'RATE_LIMITED').length).toBeGreaterThanOrEqual(1);
    expect(codes.filter((x) => x === 'NOT_FOUND').length).toBeGreaterThanOrEqual(1);
  });

  it('a client that reads and acks a backlog of big messages at full prefetch is never cut as slow', async () => {
    const gw = await gateway({ ws: { sendBufferBytes: 256 * 1024 } });
    const topic = uniqueTopic('ws.backlog');
    // The durable group exists and its backlog builds up while no consumer runs.
    const first = await gw.bus.subscribe(topic, () => {}, { group: 'backlog-worker' });
    await first.close();
    const payload = 'x'.repeat(32 * 1024);
    await gw.bus.publishBatch(Array.from({ length: 300 }, (_, i) => ({ topic, data: { i, payload } })));
    const c = await pool.open(gw.url);
    let closedWith: number | undefined;
    c.socket.on('close', (code: number) => {
      closedWith = code;
    });
    c.socket.on('message', (raw) => {
      const f = JSON.parse(String(raw)) as { op: string; delivery?: string };
      if (f.op === 'message') c.send({ op: 'ack', delivery: f.delivery });
    });
    await c.call({ op: 'subscribe', topic, durable: 'backlog-worker', prefetch: 300 });
    // 300 deliveries woken at once: each must see the send buffer as it is when it sends.
    await until(
      () => closedWith !== undefined || c.frames.filter((f) => f.op === 'message').length === 300,
      20_000,
      '300 deliveries',
    );
    expect(closedWith).toBeUndefined();
    expect(new Set(c.frames.filter((f) => f.op === 'message').map((f) => f.envelope.data.i)).size).toBe(300);
  });

  it('holds the subscription limit against a burst of subscribes sent at once', async () => {
    const gw = await gateway();
    const c = await pool.open(gw.url);
    for (let i = 0; i < 150; i++) c.send({ op: 'subscribe', id: `s${i}`, topic: uniqueTopic('ws.many') });
    await until(() => c.frames.length >= 150, 10_000, '150 answers');
    const subscribed = c.frames.filter((f) => f.op === 'subscribed').length;
    expect(subscribed).toBe(100);
    expect(c.frames.filter((f) => f.op === 'error' && f.code === 'VALIDATION')).toHaveLength(50);
    expect(gw.gateway.context.connections.list()[0]?.subscriptions).toHaveLength(100);
  });

  it('exempts only the first settle of a held delivery: repeats of it are counted', async () => {
    const gw = await gateway({ ws: { ratePerSecond: 1, rateBurst: 3 } });
    const c = await pool.open(gw.url);
    const topic = uniqueTopic('ws.repeat');
    const { sub } = await c.call({ op: 'subscribe', topic, prefetch: 1 }); // token 1
    await gw.bus.publish(topic, 1);
    await until(() => c.messages(sub).length === 1, 5_000, 'a delivery');
    const m = c.messages(sub)[0];
    for (let i = 0; i < 6; i++) c.send({ op: 'ack', delivery: m?.delivery });
    await until(() => c.frames.filter((f) => f.op === 'error').length === 5, 5_000, '5 answers');
    const codes = c.frames.filter((f) => f.op === 'error').map((f) => f.code);
    // One exempt ack, two tokens left (NOT_FOUND: already settled), then refused.
    expect(codes.filter((x) => x === 'NOT_FOUND')).toHaveLength(2);
    expect(codes.filter((x) => x === 'RATE_LIMITED')).toHaveLength(3);
  });

  it('takes a burst of acks for held deliveries in one go, past the frames-in-progress limit', async () => {
    const gw = await gateway({ ws: { ratePerSecond: 1_000_000, rateBurst: 1_000_000 } });
    const c = await pool.open(gw.url);
    const topic = uniqueTopic('ws.acks');
    const { sub, group } = await c.call({ op: 'subscribe', topic, prefetch: 1_000 });
    await gw.bus.publishBatch(Array.from({ length: 600 }, (_, i) => ({ topic, data: i })));
    await until(() => c.messages(sub).length === 600, 10_000, '600 deliveries');
    // Sent back to back, they arrive in a few reads and run at once.
    for (const m of c.messages(sub)) c.send({ op: 'ack', delivery: m.delivery });
    await c.call({ op: 'ping' });
    expect(c.frames.filter((f) => f.op === 'error')).toEqual([]);
    await until(async () => (await gw.bus.transport.groupStats?.(group))?.inFlight === 0, 5_000, 'all acked');
  });

  it('stops delivering to a client that does not read and drops it as a slow consumer, memory bounded', async () => {
    const sendBufferBytes = 64 * 1024;
    const gw = await gateway({ ws: { sendBufferBytes, pingIntervalMs: 200 } });
    const registry = gw.gateway.context.connections as WsConnectionRegistry;
    const c = await pool.open(gw.url);
    const topic = uniqueTopic('ws.slow');
    const { sub } = await c.call({ op: 'subscribe', topic, prefetch: 1_000 });
    // Stop reading: the kernel buffers fill, then the gateway's send buffer.
    const raw = (c.socket as unknown as { _socket: { pause(): void; resume(): void } })._socket;
    raw.pause();
    const payload = 'x'.repeat(32 * 1024);
    const published = 2_000;
    for (let i = 0; i < published; i += 100)
      await gw.bus.publishBatch(Array.from({ length: 100 }, (_, j) => ({ topic, data: { i: i + j, payload } })));
    const [conn] = registry.open();
    let maxBuffered = 0;
    await until(
      () => {
        maxBuffered = Math.max(maxBuffered, conn?.socket.bufferedAmount ?? 0);
        return conn?.socket.readyState !== WebSocket.OPEN;
      },
      15_000,
      'slow-consumer close',
    );
    const framesOut = conn?.info().framesOut ?? 0;
    raw.resume();
    expect(await c.closed).toEqual({ code: 4408, reason: 'slow-consumer' });
    // Bounded: the buffer never went past twice its limit plus one message, and most messages were never sent.
    expect(maxBuffered).toBeLessThanOrEqual(2 * sendBufferBytes + 40 * 1024);
    expect(framesOut).toBeLessThan(published / 2);
    expect(c.messages(sub).length).toBeLessThan(published / 2);
    await until(() => registry.size === 0, 5_000, 'released');
  });

  it('drops a client that keeps sending but does not read once its send buffer passes twice the limit', async () => {
    const sendBufferBytes = 16 * 1024;
    const gw = await gateway({ ws: { sendBufferBytes, ratePerSecond: 1_000_000, rateBurst: 1_000_000 } });
    const registry = gw.gateway.context.connections as WsConnectionRegistry;
    const c = await pool.open(gw.url);
    const raw = (c.socket as unknown as { _socket: { pause(): void; resume(): void } })._socket;
    raw.pause();
    const [conn] = registry.open();
    const id = 'p'.repeat(128);
    let sent = 0;
    let maxBuffered = 0;
    // Pings in rounds until the gateway gives up on the client (kernel buffers absorb the first MBs).
    await until(
      () => {
        maxBuffered = Math.max(maxBuffered, conn?.socket.bufferedAmount ?? 0);
        if (conn?.socket.readyState !== WebSocket.OPEN) return true;
        if (c.socket.bufferedAmount < 1024 * 1024) for (let i = 0; i < 2_000; i++, sent++) c.send({ op: 'ping', id });
        return false;
      },
      20_000,
      'slow-consumer close',
    );
    raw.resume();
    expect(await c.closed).toEqual({ code: 4408, reason: 'slow-consumer' });
    expect(maxBuffered).toBeLessThanOrEqual(2 * sendBufferBytes + 1024);
    expect(sent).toBeGreaterThan(0);
  });

  it('drops a client that misses two pongs', async () => {
    const gw = await gateway({ ws: { pingIntervalMs: 100 } });
    const socket = new WebSocket(wsUrl(gw.url), { autoPong: false });
    const c = new WsTestClient(socket);
    await new Promise((r) => socket.once('open', r));
    const closed = await c.closed;
    expect(closed.code).toBe(1006);
    await until(() => gw.gateway.context.connections.size === 0, 5_000, 'released');
  });
});
