import { serverSkipReason } from '@agentbus/conformance';
import type { RawDelivery } from '@agentbus/core';
import { redisTransport } from '@agentbus/redis';
import { afterAll, expect, it } from 'vitest';
import { deleteKeys, REDIS_URL, testPrefix } from './helpers.js';

const skipReason = await serverSkipReason('Redis', REDIS_URL, 6379);
const keyPrefix = testPrefix('patterns');
afterAll(async () => {
  if (!skipReason) await deleteKeys(keyPrefix);
});

it.skipIf(skipReason)(
  'a pattern subscription receives topics first published by another client after it started',
  async () => {
    // Slow discovery polling: the new topics must arrive through the publisher's announcement.
    const consumer = redisTransport({ url: REDIS_URL, keyPrefix, discoveryIntervalMs: 60_000, pollIntervalMs: 60_000 });
    const producer = redisTransport({ url: REDIS_URL, keyPrefix });
    const sub = await consumer.subscribe('agents.*.inbox', { group: 'router', prefetch: 10, ackTimeoutMs: 5_000 });
    const it = sub[Symbol.asyncIterator]();
    const got: RawDelivery[] = [];
    const started = Date.now();
    for (const agent of ['planner', 'coder', 'critic']) {
      await producer.publish([
        { id: agent, topic: `agents.${agent}.inbox`, body: Buffer.from(agent), headers: {}, priority: 4 },
      ]);
      const r = await it.next();
      if (!r.done) got.push(r.value);
    }
    expect(got.map((d) => d.message.topic)).toEqual([
      'agents.planner.inbox',
      'agents.coder.inbox',
      'agents.critic.inbox',
    ]);
    expect(Date.now() - started).toBeLessThan(30_000);
    for (const d of got) await d.ack();
    await producer.close();
    await consumer.close();
  },
  60_000,
);
