import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { type AmqpTransport, amqpTransport } from '@agentbus/amqp';
import { serverSkipReason } from '@agentbus/conformance';
import { ConfigError, type RawDelivery, type Subscription, type TransportMessage } from '@agentbus/core';
import { afterAll, describe, expect, it } from 'vitest';
import { AMQP_URL, deleteNamespace, testNamespace } from './helpers.js';

const skipReason = await serverSkipReason('RabbitMQ', AMQP_URL, 5672);
const namespace = testNamespace('ephemeral');
const run = promisify(execFile);

/** Names of the broker's queues or exchanges under `prefix` (rabbitmqctl: AMQP cannot list them). */
async function brokerNames(what: 'list_queues' | 'list_exchanges', prefix: string): Promise<string[]> {
  const { stdout } = await run('rabbitmqctl', ['-q', what, 'name'], { timeout: 30_000 });
  return stdout
    .split('\n')
    .map((l) => l.trim())
    .filter((name) => name.startsWith(prefix));
}

let n = 0;
function message(topic: string): TransportMessage {
  n++;
  return { id: `m${n}`, topic, body: Buffer.from(String(n)), headers: {}, priority: 4 };
}

async function take(sub: Subscription<RawDelivery>): Promise<RawDelivery> {
  const r = await sub[Symbol.asyncIterator]().next();
  if (r.done) throw new Error('subscription ended');
  return r.value;
}

describe.skipIf(skipReason)('RabbitMQ ephemeral groups', () => {
  const open: AmqpTransport[] = [];
  const transport = () => {
    const t = amqpTransport({ url: AMQP_URL, namespace, queueType: 'quorum' });
    open.push(t);
    return t;
  };
  const opts = { prefetch: 10, ackTimeoutMs: 30_000 };
  afterAll(async () => {
    await Promise.all(open.map((t) => t.close()));
    if (!skipReason) await deleteNamespace(namespace);
  });

  it('its queue, retry queue, dead-letter queue and exchange are deleted when the subscription closes', async () => {
    const t = transport();
    const group = '_inbox.amqp';
    const sub = await t.subscribe(group, { group, ...opts, ephemeral: true });
    await t.publish([message(group), message(group), message(group)]);
    const [a, b] = [await take(sub), await take(sub), await take(sub)]; // the third is held when it closes
    await a.nack({ delayMs: 100 }); // through an (exclusive) retry queue
    await b.deadLetter('poison');
    const again = await take(sub);
    expect([again.message.id, again.attempt]).toEqual([a.message.id, 2]);
    expect(await t.deadLetters.list({ group })).toHaveLength(1);
    const prefix = t.names.queue(group);
    expect((await brokerNames('list_queues', prefix)).sort()).toEqual(
      [prefix, `${prefix}.dlq`, `${prefix}.retry.100`].sort(),
    );
    await sub.close();
    expect(await brokerNames('list_queues', prefix)).toEqual([]);
    expect(await brokerNames('list_exchanges', prefix)).toEqual([]);
    expect(await t.groupStats(group)).toEqual({ backlog: 0, inFlight: 0 });
    expect(await t.deadLetters.list({ group })).toEqual([]);
  });

  it('a group is durable or ephemeral, and an ephemeral group has one subscriber', async () => {
    const a = transport();
    const b = transport();
    await (await a.subscribe('amqp.kind', { group: 'kind-durable', ...opts })).close();
    await expect(a.subscribe('amqp.kind', { group: 'kind-durable', ...opts, ephemeral: true })).rejects.toBeInstanceOf(
      ConfigError,
    );
    const inbox = await a.subscribe('amqp.kind.inbox', { group: 'kind-inbox', ...opts, ephemeral: true });
    await expect(
      a.subscribe('amqp.kind.inbox', { group: 'kind-inbox', ...opts, ephemeral: true }),
    ).rejects.toBeInstanceOf(ConfigError);
    await expect(
      b.subscribe('amqp.kind.inbox', { group: 'kind-inbox', ...opts, ephemeral: true }),
    ).rejects.toBeInstanceOf(ConfigError);
    await expect(b.subscribe('amqp.kind.inbox', { group: 'kind-inbox', ...opts })).rejects.toBeInstanceOf(ConfigError);
    await inbox.close();
  });
});
