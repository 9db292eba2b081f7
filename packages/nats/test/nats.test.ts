import { randomUUID } from 'node:crypto';
import { Reader, serverSkipReason, until } from '@agentbus/conformance';
import { ConfigError, type TransportMessage } from '@agentbus/core';
import { type NatsTransport, natsTransport, resolveNatsOptions } from '@agentbus/nats';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { afterAll, describe, expect, it } from 'vitest';
import { deleteNamespace, NATS_URL, testNamespace } from './helpers.js';

const skipReason = await serverSkipReason('NATS', NATS_URL, 4222);
const namespace = testNamespace('nats');

/** The server's view of a group's consumer. */
async function consumerInfo(t: NatsTransport, group: string) {
  const nc = await connect({ servers: NATS_URL });
  try {
    return await (await jetstreamManager(nc)).consumers.info(t.names.stream, t.names.consumer(group));
  } finally {
    await nc.close();
  }
}

function message(topic: string, extra: Partial<TransportMessage> = {}): TransportMessage {
  return { id: randomUUID(), topic, body: Buffer.from('x'), headers: {}, priority: 4, ...extra };
}

describe.skipIf(skipReason)('NATS JetStream transport', () => {
  const open: NatsTransport[] = [];
  const transport = () => {
    const t = natsTransport({ url: NATS_URL, namespace });
    open.push(t);
    return t;
  };
  afterAll(async () => {
    for (const t of open) await t.close();
    await deleteNamespace(namespace);
  });

  it('stores a publish retried with the same id once (Nats-Msg-Id inside the duplicate window)', async () => {
    const t = transport();
    const topic = `dedup.${randomUUID().slice(0, 8)}`;
    const group = `dedup-${randomUUID().slice(0, 8)}`;
    const r = new Reader(await t.subscribe(topic, { group, prefetch: 10, ackTimeoutMs: 5_000 }));
    const m = message(topic);
    await t.publish([m]);
    await t.publish([m]); // a retry after a lost ack, say
    await t.publish([{ ...m, id: randomUUID() }]);
    const got = await r.expectMany(2);
    expect(got.filter((d) => d.message.id === m.id)).toHaveLength(1);
    for (const d of got) await d.ack();
    await r.expectNothing(300);
    await r.close();
  });

  it('hands out what it has fetched highest priority first (the emulation of priority)', async () => {
    const t = transport();
    const topic = `prio.${randomUUID().slice(0, 8)}`;
    const group = `prio-${randomUUID().slice(0, 8)}`;
    await (await t.subscribe(topic, { group, prefetch: 10, ackTimeoutMs: 5_000 })).close();
    const prios = [1, 9, 4, 9, 0];
    await t.publish(prios.map((priority, i) => message(topic, { priority, headers: { i: String(i) } })));
    const r = new Reader(await t.subscribe(topic, { group, prefetch: 10, ackTimeoutMs: 5_000 }));
    // Read once the server has handed all five to the subscription (its one pull request).
    await until(async () => (await consumerInfo(t, group)).num_ack_pending === 5, 5_000, 'all five delivered');
    const got = await r.expectMany(5);
    expect(got.map((d) => `${d.message.priority}:${d.message.headers.i}`)).toEqual(['9:1', '9:3', '4:2', '1:0', '0:4']);
    for (const d of got) await d.ack();
    await r.close();
  });

  it('sets no JetStream delivery limit: the bus dead-letters past maxAttempts, and a failed dead-lettering is delivered again', async () => {
    const t = transport();
    const group = `maxdel-${randomUUID().slice(0, 8)}`;
    await (await t.subscribe('maxdel.x', { group, prefetch: 1, ackTimeoutMs: 5_000, maxAttempts: 3 })).close();
    const info = await consumerInfo(t, group);
    expect(info.config.max_deliver).toBe(-1);
    expect(info.config.ack_wait).toBe(5_000 * 1_000_000);
    expect(info.config.filter_subject).toBe(t.names.subject('maxdel.x'));
  });

  it('lifts the delivery limit of a consumer an earlier version declared (maxAttempts + 1)', async () => {
    const t = transport();
    await t.connect();
    const group = `olddel-${randomUUID().slice(0, 8)}`;
    // Declared the old way, then subscribed to by this version.
    await (await t.subscribe('olddel.x', { group, prefetch: 1, ackTimeoutMs: 5_000 })).close();
    const nc = await connect({ servers: NATS_URL });
    try {
      await (await jetstreamManager(nc)).consumers.update(t.names.stream, t.names.consumer(group), { max_deliver: 4 });
    } finally {
      await nc.close();
    }
    expect((await consumerInfo(t, group)).config.max_deliver).toBe(4);
    await (await t.subscribe('olddel.x', { group, prefetch: 1, ackTimeoutMs: 5_000, maxAttempts: 3 })).close();
    expect((await consumerInfo(t, group)).config.max_deliver).toBe(-1);
  });

  it('refuses a second pattern for a group with a ConfigError (one filter subject per consumer on 2.9)', async () => {
    const t = transport();
    const group = `onepattern-${randomUUID().slice(0, 8)}`;
    await (await t.subscribe('one.a', { group, prefetch: 1, ackTimeoutMs: 5_000 })).close();
    await expect(t.subscribe('one.b', { group, prefetch: 1, ackTimeoutMs: 5_000 })).rejects.toBeInstanceOf(ConfigError);
    // The same pattern again is fine.
    await (await t.subscribe('one.a', { group, prefetch: 1, ackTimeoutMs: 5_000 })).close();
  });

  it('names groups that are not subject tokens by a digest and still lists their dead letters', async () => {
    const t = transport();
    const topic = `odd.${randomUUID().slice(0, 8)}`;
    const group = 'billing team/EU.west *';
    const r = new Reader(await t.subscribe(topic, { group, prefetch: 1, ackTimeoutMs: 5_000 }));
    await t.publish([message(topic)]);
    const d = await r.expect();
    await d.deadLetter('poison', { error: 'bad' });
    const [dead] = await t.deadLetters.list({ group });
    expect(dead?.group).toBe(group);
    expect(dead?.message.topic).toBe(topic);
    expect(t.names.consumer(group)).toMatch(/^g[0-9a-f]{32}$/);
    await r.close();
  });
});

describe('NATS transport options', () => {
  it.each([
    [{ url: 'http://x' }, 'url'],
    [{ namespace: 'a.b' }, 'namespace'],
    [{ storage: 'disk' }, 'storage'],
    [{ replicas: 0 }, 'replicas'],
    [{ duplicateWindowMs: 0 }, 'duplicateWindowMs'],
    [{ reconnect: { waitMs: 0 } }, 'reconnect.waitMs'],
    [{ servers: ['x'] }, 'servers'],
  ])('rejects %j with a ConfigError naming %s', (options, path) => {
    const err = (() => {
      try {
        natsTransport(options as never);
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).path).toBe(path);
  });

  it('has defaults for everything', () => {
    expect(resolveNatsOptions({})).toMatchObject({
      servers: ['nats://127.0.0.1:4222'],
      namespace: 'agentbus',
      storage: 'file',
      duplicateWindowMs: 120_000,
    });
  });

  it('fails to connect to a server that is not there with a retryable ConnectionError', async () => {
    const t = natsTransport({ url: 'nats://127.0.0.1:1' });
    await expect(t.connect()).rejects.toMatchObject({ code: 'CONNECTION', retryable: true });
    await expect(t.publish([message('nobody.home')])).rejects.toMatchObject({ retryable: true });
    expect((await t.health(true)).status).toBe('fail');
    await t.close();
  });
});
