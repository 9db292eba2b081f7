import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';

export const REDIS_URL = process.env.AGENTBUS_REDIS_URL ?? 'redis://127.0.0.1:6379';

/** A key prefix of its own per test file, so runs never see each other's keys. */
export function testPrefix(name: string): string {
  return `agentbus-test:${name}:${randomBytes(4).toString('hex')}`;
}

/** Deletes every key under `prefix` (after the tests). */
export async function deleteKeys(prefix: string, url = REDIS_URL): Promise<void> {
  const redis = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await redis.connect();
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length > 0) await redis.del(...keys);
    } while (cursor !== '0');
  } finally {
    redis.disconnect();
  }
}
