import { eventStoreContract, serverSkipReason, until } from '@agentbus/conformance';
import { silentLogger } from '@agentbus/core';
import { redisEventStore } from '@agentbus/redis';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { deleteKeys, REDIS_URL, testPrefix } from './helpers.js';

const skipReason = await serverSkipReason('Redis', REDIS_URL, 6379);
const keyPrefix = testPrefix('events');
afterAll(async () => {
  if (!skipReason) await deleteKeys(keyPrefix);
});

describe.skipIf(skipReason)('Redis event store', () => {
  eventStoreContract({
    name: 'Redis',
    open: (name, options) => redisEventStore({ ...options, url: REDIS_URL, keyPrefix: `${keyPrefix}:${name}` }),
    durable: true,
  });

  it('keeps events in one global stream keyed by position and a list of positions per stream', async () => {
    const prefix = `${keyPrefix}:layout`;
    const store = redisEventStore({ url: REDIS_URL, keyPrefix: prefix, logger: silentLogger });
    const r = await store.append('order-1', [
      { type: 'order.placed', data: { total: 3 } },
      { type: 'order.paid', data: { amount: 3 } },
    ]);
    const redis = new Redis(REDIS_URL);
    expect(await redis.lrange(`${prefix}:s:order-1`, 0, -1)).toEqual(r.events.map((e) => String(e.position)));
    const entries = await redis.xrange(`${prefix}:all`, '-', '+');
    expect(entries.map(([id]) => id)).toEqual(r.events.map((e) => `${e.position}-0`));
    expect(await redis.get(`${prefix}:head`)).toBe(String(r.position));
    redis.disconnect();
    await store.close();
  });

  it('wakes a caught-up subscription at once when another process appends, without waiting for a poll', async () => {
    const prefix = `${keyPrefix}:wake`;
    // A poll interval far beyond the test's deadline: only the XREAD BLOCK watcher can deliver in time.
    const reader = redisEventStore({
      url: REDIS_URL,
      keyPrefix: prefix,
      logger: silentLogger,
      pollIntervalMs: 600_000,
    });
    const writer = redisEventStore({ url: REDIS_URL, keyPrefix: prefix, logger: silentLogger });
    const got: string[] = [];
    let caughtUp = false;
    const sub = reader.subscribeAll(
      (e) => {
        got.push(e.type);
      },
      {
        onCaughtUp: () => {
          caughtUp = true;
        },
      },
    );
    await until(() => caughtUp, 10_000, 'the subscription to catch up');
    for (const type of ['a', 'b', 'c']) {
      await writer.append('w-1', [{ type, data: {} }]);
      await until(() => got.includes(type), 5_000, `event ${type} from the other store`);
    }
    expect(got).toEqual(['a', 'b', 'c']);
    await sub.close();
    await reader.close();
    await writer.close();
  });
});
