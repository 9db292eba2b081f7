import { randomBytes } from 'node:crypto';
import { until } from '@agentbus/conformance';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { embeddedAndRedisFixtures, post, type RunningGateway, startGateway, uniqueTopic } from './gateway-fixtures.js';
import { ClientPool, type WsTestClient } from './ws-helpers.js';

const fixtures = await embeddedAndRedisFixtures('ws-reconnect');

const MESSAGES = 1_000;

/** Acks every delivery as it arrives (install before subscribing) and collects the envelope ids. */
function autoAck(c: WsTestClient): Set<string> {
  const ids = new Set<string>();
  c.socket.on('message', (raw) => {
    const f = JSON.parse(String(raw));
    if (f.op !== 'message') return;
    ids.add(f.envelope.id);
    c.send({ op: 'ack', delivery: f.delivery });
  });
  return ids;
}

describe.each(fixtures)('WebSocket durable reconnect on $name', (fixture) => {
  let gw: RunningGateway;
  const pool = new ClientPool();
  beforeAll(async () => {
    if (fixture.skipReason) return;
    gw = await startGateway(fixture);
  });
  afterEach(() => pool.closeAll());
  afterAll(async () => {
    await gw?.stop();
  });
  const run = fixture.skipReason ? it.skip : it;

  run(`delivers all ${MESSAGES} messages published while a durable client was away`, async () => {
    const topic = uniqueTopic('ws.reconnect');
    const durable = `agent-${randomBytes(4).toString('hex')}`;
    const first = await pool.open(gw.url);
    expect(await first.call({ op: 'subscribe', topic, durable, prefetch: 100 })).toMatchObject({
      op: 'subscribed',
      group: durable,
    });
    await first.close();
    await until(() => gw.gateway.context.connections.size === 0, 5_000, 'first socket released');

    const res = await post(`${gw.url}/v1/topics/${topic}/messages`, {
      messages: Array.from({ length: MESSAGES }, (_, i) => ({ data: { i } })),
    });
    expect(res.status).toBe(201);
    const published = new Set<string>(res.body.ids);
    expect(published.size).toBe(MESSAGES);

    const again = await pool.open(gw.url);
    const received = autoAck(again);
    const { sub } = await again.call({ op: 'subscribe', topic, durable, prefetch: 100 });
    await until(() => received.size === MESSAGES, 20_000, `${MESSAGES} redeliveries`);
    expect([...received].sort()).toEqual([...published].sort());
    // Each came once (acked as received): no duplicate frames.
    expect(again.messages(sub)).toHaveLength(MESSAGES);
  });
});
