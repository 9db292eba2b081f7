import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { promisify } from 'node:util';
import { type AmqpTransport, amqpTransport, resolveAmqpOptions } from '@agentbus/amqp';
import { Reader, serverSkipReason, until } from '@agentbus/conformance';
import { ConfigError, type TransportMessage } from '@agentbus/core';
import amqp from 'amqplib';
import { afterAll, describe, expect, it } from 'vitest';
import { AMQP_URL, deleteNamespace, testNamespace } from './helpers.js';

const skipReason = await serverSkipReason('RabbitMQ', AMQP_URL, 5672);
const namespace = testNamespace('amqp');
const run = promisify(execFile);

function message(topic: string, extra: Partial<TransportMessage> = {}): TransportMessage {
  return { id: randomUUID(), topic, body: Buffer.from('x'), headers: {}, priority: 4, ...extra };
}

/** `name -> arguments` of the broker's queues under the namespace (rabbitmqctl; no management plugin here). */
async function queueArguments(prefix: string): Promise<Map<string, string>> {
  const { stdout } = await run('rabbitmqctl', ['-q', 'list_queues', 'name', 'arguments'], { timeout: 30_000 });
  const out = new Map<string, string>();
  for (const line of stdout.split('\n')) {
    const [name, args] = line.split('\t');
    if (name?.startsWith(prefix)) out.set(name, args ?? '');
  }
  return out;
}

describe.skipIf(skipReason)('RabbitMQ transport', () => {
  const open: AmqpTransport[] = [];
  const transport = (o: Parameters<typeof amqpTransport>[0] = {}) => {
    const t = amqpTransport({ url: AMQP_URL, namespace, ...o });
    open.push(t);
    return t;
  };
  afterAll(async () => {
    for (const t of open) await t.close();
    await deleteNamespace(namespace);
  });

  it('declares quorum group queues that dead-letter at least once and refuse publishes when full', async () => {
    const t = transport();
    const group = `decl-${randomUUID().slice(0, 8)}`;
    await (await t.subscribe('decl.>', { group, prefetch: 1, ackTimeoutMs: 1000 })).close();
    const args = await queueArguments(t.names.queue(group));
    const q = args.get(t.names.queue(group)) ?? '';
    expect(q).toContain('x-queue-type');
    expect(q).toContain('quorum');
    expect(q).toContain('at-least-once');
    expect(q).toContain('reject-publish');
    expect(q).toContain(t.names.deadLetterExchange(group));
    expect(args.has(t.names.deadLetterQueue(group))).toBe(true);
  });

  it('acks out of order without acking a delivery still held (multiple acks cover only settled runs)', async () => {
    const topic = `acks.${randomUUID().slice(0, 8)}`;
    const group = `acks-${randomUUID().slice(0, 8)}`;
    const a = transport();
    const r = new Reader(await a.subscribe(topic, { group, prefetch: 5, ackTimeoutMs: 30_000 }));
    const sent = Array.from({ length: 5 }, () => message(topic));
    await a.publish(sent);
    const got = await r.expectMany(5);
    const byId = new Map(got.map((d) => [d.message.id, d]));
    const d = (i: number) => byId.get(sent[i]?.id as string) as (typeof got)[number];
    // Tags 2, 4, 5 acked first (single acks behind 1), then 1 (a multiple ack up to 2); 3 is held.
    await d(1).ack();
    await d(3).ack();
    await d(4).ack();
    await new Promise((res) => setTimeout(res, 50));
    await d(0).ack();
    await new Promise((res) => setTimeout(res, 50));
    // Cut the connection under the consumer (no release on close): the broker gives back exactly
    // what was not acked, and the subscription, reconnected by itself, gets it again.
    type Held = { lease: { live: { ch: { connection: { stream: { destroy(e: Error): void } } } } } };
    (d(2) as unknown as Held).lease.live.ch.connection.stream.destroy(new Error('network cut'));
    const back = await r.expect(15_000);
    expect(back.message.id).toBe(sent[2]?.id);
    expect(back.attempt).toBe(2);
    await back.ack();
    await r.expectNothing(500);
    await r.close();
  });

  it('refuses to use a group queue declared with another queue type, with a ConfigError', async () => {
    const group = `type-${randomUUID().slice(0, 8)}`;
    await (await transport().subscribe('type.a', { group, prefetch: 1, ackTimeoutMs: 1000 })).close();
    const classic = transport({ queueType: 'classic' });
    await expect(classic.subscribe('type.a', { group, prefetch: 1, ackTimeoutMs: 1000 })).rejects.toBeInstanceOf(
      ConfigError,
    );
    // The transport keeps working after the refused declaration.
    expect((await classic.health(true)).status).toBe('pass');
  });

  it('rounds a retry delay up to the next step of the ladder, never delivering early', async () => {
    const t = transport({ retryLadderMs: [100, 600, 5_000] });
    const topic = `ladder.${randomUUID().slice(0, 8)}`;
    const group = `ladder-${randomUUID().slice(0, 8)}`;
    const r = new Reader(await t.subscribe(topic, { group, prefetch: 1, ackTimeoutMs: 5_000 }));
    await t.publish([message(topic)]);
    const d1 = await r.expect();
    const nackedAt = Date.now();
    await d1.nack({ delayMs: 150 });
    const d2 = await r.expect(10_000);
    expect(Date.now() - nackedAt).toBeGreaterThanOrEqual(595);
    expect(d2.attempt).toBe(2);
    await d2.ack();
    expect((await queueArguments(t.names.retry(group, 600))).size).toBe(1);
    await r.close();
  });

  it('refuses publishes beyond maxQueueLength with a retryable error and keeps what it accepted', async () => {
    const t = transport({ queueType: 'classic', maxQueueLength: 2 });
    const topic = `full.${randomUUID().slice(0, 8)}`;
    const group = `full-${randomUUID().slice(0, 8)}`;
    await (await t.subscribe(topic, { group, prefetch: 1, ackTimeoutMs: 1000 })).close();
    await t.publish([message(topic)]);
    await t.publish([message(topic)]);
    await expect(t.publish([message(topic)])).rejects.toMatchObject({ code: 'RATE_LIMITED', retryable: true });
    const r = new Reader(await t.subscribe(topic, { group, prefetch: 5, ackTimeoutMs: 1000 }));
    for (const d of await r.expectMany(2)) await d.ack();
    await r.expectNothing(200);
    await r.close();
  });

  it('lists a message the broker dead-lettered itself (rejected by a foreign consumer)', async () => {
    const t = transport();
    const topic = `foreign.${randomUUID().slice(0, 8)}`;
    const group = `foreign-${randomUUID().slice(0, 8)}`;
    await (await t.subscribe(topic, { group, prefetch: 1, ackTimeoutMs: 1000 })).close();
    const m = message(topic);
    await t.publish([m]);
    const conn = await amqp.connect(AMQP_URL);
    try {
      const ch = await conn.createChannel();
      const got = await ch.get(t.names.queue(group), { noAck: false });
      expect(got).not.toBe(false);
      if (got) ch.reject(got, false);
      await ch.close();
    } finally {
      await conn.close();
    }
    await until(async () => (await t.deadLetters.list({ group })).length === 1, 5_000, 'the broker dead letter');
    const [dead] = await t.deadLetters.list({ group });
    expect(dead?.reason).toBe('rejected');
    expect(dead?.message.id).toBe(m.id);
    expect(dead?.message.topic).toBe(topic);
    expect(await t.deadLetters.replay(dead?.id as string)).toBe(1);
    const r = new Reader(await t.subscribe(topic, { group, prefetch: 1, ackTimeoutMs: 1000 }));
    const again = await r.expect();
    expect(again.message.id).toBe(m.id);
    expect(again.attempt).toBe(1);
    await again.ack();
    await r.close();
  });

  it('browses of the dead letters at the same time, on two connections and on one, each see every record', async () => {
    const a = transport();
    const b = transport();
    const topic = `browse.${randomUUID().slice(0, 8)}`;
    const group = `browse-${randomUUID().slice(0, 8)}`;
    const r = new Reader(await a.subscribe(topic, { group, prefetch: 10, ackTimeoutMs: 30_000 }));
    await a.publish(Array.from({ length: 5 }, () => message(topic)));
    for (const d of await r.expectMany(5)) await d.deadLetter('poison', {});
    await r.close();
    await until(async () => (await a.deadLetters.list({ group })).length === 5, 5_000, 'five dead letters');
    // Lists by group and over every group (the registry), from both connections, interleaved.
    const seen = await Promise.all(
      Array.from({ length: 24 }, async (_, i) => {
        const t = i % 2 === 0 ? a : b;
        const all = await t.deadLetters.list(i % 3 === 0 ? { topic } : { group });
        return all.length;
      }),
    );
    expect(seen).toEqual(Array.from({ length: 24 }, () => 5));
    // The locks are gone afterwards.
    const left = await queueArguments(`${namespace}.lock.`);
    expect([...left.keys()]).toEqual([]);
  });
});

describe('RabbitMQ transport options', () => {
  it.each([
    [{ url: 'http://x' }, 'url'],
    [{ namespace: 'a b' }, 'namespace'],
    [{ queueType: 'stream' }, 'queueType'],
    [{ maxPriority: 10 }, 'maxPriority'],
    [{ heartbeatS: 0 }, 'heartbeatS'],
    [{ retryLadderMs: [] }, 'retryLadderMs'],
    [{ retryLadderMs: [100, 50] }, 'retryLadderMs[1]'],
    [{ maxQueueLength: 0 }, 'maxQueueLength'],
    [{ reconnect: { maxMs: 0 } }, 'reconnect.maxMs'],
    [{ prefetch: 5 }, 'prefetch'],
  ])('rejects %j with a ConfigError naming %s', (options, path) => {
    const err = (() => {
      try {
        amqpTransport(options as never);
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).path).toBe(path);
  });

  it('has defaults for everything', () => {
    expect(resolveAmqpOptions({})).toMatchObject({
      url: 'amqp://guest:guest@127.0.0.1:5672',
      namespace: 'agentbus',
      queueType: 'quorum',
      heartbeatS: 5,
    });
  });

  it('fails to connect to a broker that is not there with a retryable ConnectionError', async () => {
    const t = amqpTransport({ url: 'amqp://guest:guest@127.0.0.1:1' });
    await expect(t.connect()).rejects.toMatchObject({ code: 'CONNECTION', retryable: true });
    await expect(t.publish([message('nobody.home')])).rejects.toMatchObject({ code: 'CONNECTION' });
    expect((await t.health(true)).status).toBe('fail');
    await t.close();
  });
});
