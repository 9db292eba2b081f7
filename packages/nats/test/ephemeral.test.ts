import { Reader, serverSkipReason } from '@agentbus/conformance';
import { ConfigError, type TransportMessage } from '@agentbus/core';
import { type NatsTransport, natsTransport } from '@agentbus/nats';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { afterAll, describe, expect, it } from 'vitest';
import { deleteNamespace, NATS_URL, testNamespace } from './helpers.js';

const skipReason = await serverSkipReason('NATS', NATS_URL, 4222);
const namespace = testNamespace('ephemeral');

let n = 0;
function message(topic: string): TransportMessage {
  n++;
  return { id: `m${n}-${namespace}`, topic, body: Buffer.from(String(n)), headers: {}, priority: 4 };
}

describe.skipIf(skipReason)('NATS ephemeral groups', () => {
  const open: NatsTransport[] = [];
  const transport = (ephemeralInactiveMs = 30_000) => {
    const t = natsTransport({ url: NATS_URL, namespace, ephemeralInactiveMs, ephemeralSweepIntervalMs: 0 });
    open.push(t);
    return t;
  };
  afterAll(async () => {
    await Promise.all(open.map((t) => t.close()));
    if (!skipReason) await deleteNamespace(namespace);
  });

  it('a subscription holding `prefetch` messages past the inactive threshold keeps its consumer and gets no more', async () => {
    const t = transport(1_000);
    const topic = 'eph.busy';
    const r = new Reader(
      await t.subscribe(topic, { group: 'busy', prefetch: 1, ackTimeoutMs: 30_000, ephemeral: true }),
    );
    await t.publish([message(topic), message(topic), message(topic)]);
    const first = await r.expect();
    // Twice the threshold while it holds its one message: its keep-alive request stays unfilled.
    await r.expectNothing(2_500);
    expect(await t.routeCount(topic)).toBe(1);
    expect(await t.groupStats('busy')).toEqual({ backlog: 2, inFlight: 1 });
    await first.ack();
    await (await r.expect()).ack();
    await (await r.expect()).ack();
    await r.close();
    expect(await t.routeCount(topic)).toBe(0);
  });

  it('a group is durable or ephemeral, and an ephemeral group has one subscriber', async () => {
    const a = transport();
    const b = transport();
    const opts = { prefetch: 1, ackTimeoutMs: 30_000 };
    await (await a.subscribe('eph.kind', { group: 'kind-durable', ...opts })).close();
    await expect(b.subscribe('eph.kind', { group: 'kind-durable', ...opts, ephemeral: true })).rejects.toBeInstanceOf(
      ConfigError,
    );
    const inbox = await a.subscribe('eph.kind.inbox', { group: 'kind-inbox', ...opts, ephemeral: true });
    await expect(
      b.subscribe('eph.kind.inbox', { group: 'kind-inbox', ...opts, ephemeral: true }),
    ).rejects.toBeInstanceOf(ConfigError);
    await expect(b.subscribe('eph.kind.inbox', { group: 'kind-inbox', ...opts })).rejects.toBeInstanceOf(ConfigError);
    await inbox.close();
    await (await b.subscribe('eph.kind.inbox', { group: 'kind-inbox', ...opts })).close();
  });

  it('the sweep keeps the dead letters of a durable group whose consumer an operator deleted', async () => {
    const t = transport();
    const topic = 'eph.durable.dl';
    const r = new Reader(await t.subscribe(topic, { group: 'audit', prefetch: 1, ackTimeoutMs: 30_000 }));
    await t.publish([message(topic)]);
    await (await r.expect()).deadLetter('poison');
    await r.close();
    const nc = await connect({ servers: NATS_URL });
    try {
      await (await jetstreamManager(nc)).consumers.delete(t.names.stream, t.names.consumer('audit'));
    } finally {
      await nc.close();
    }
    expect(await t.sweep()).toBe(0);
    expect(await t.deadLetters.list({ group: 'audit' })).toHaveLength(1);
  });
});
