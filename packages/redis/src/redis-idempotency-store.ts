import type { IdempotencyStore } from '@agentbus/core';
import type { ChainableCommander, Cluster, Redis } from 'ioredis';
import { storeClient } from './store-client.js';

export interface RedisIdempotencyStoreOptions {
  /** `redis://…` (the store opens and closes its own connection), or a client you own. */
  readonly url?: string;
  readonly client?: Redis | Cluster;
  /** Prefix of its keys (default `agentbus:idem`); a key is `<prefix>:<group>\0<source>\0<id>`. */
  readonly keyPrefix?: string;
}

/** A Redis idempotency store with its close() (it quits the connection it opened). */
export interface RedisIdempotencyStore extends IdempotencyStore {
  /**
   * Adds the completion of `key` to a MULTI (or pipeline) of yours, so that a side effect written
   * to the same Redis and the completion are applied together: a crash between them cannot make
   * a redelivery repeat the effect. Key: `idempotencyKey(group, envelope)`.
   */
  completeIn<M extends ChainableCommander>(multi: M, key: string, ttlMs: number): M;
  close(): Promise<void>;
}

/** Gives a claim back unless it was completed meanwhile. */
const RELEASE = `if redis.call('GET', KEYS[1]) == 'busy' then return redis.call('DEL', KEYS[1]) end return 0`;

/**
 * The dedup middleware's store on Redis, shared by every process: a claim is `SET key busy NX PX
 * lease` (one of them wins), completion `SET key done PX ttl`; Redis expires both by itself.
 */
export function redisIdempotencyStore(options: RedisIdempotencyStoreOptions = {}): RedisIdempotencyStore {
  const { client, prefix, wrap, close } = storeClient(options, 'agentbus:idem');
  const k = (key: string) => `${prefix}:${key}`;
  return {
    begin: (key, leaseMs) =>
      wrap('dedup begin', async () => {
        const ms = Math.max(1, Math.ceil(leaseMs));
        if ((await client.set(k(key), 'busy', 'PX', ms, 'NX')) === 'OK') return 'new';
        const state = await client.get(k(key));
        if (state === 'done' || state === 'busy') return state;
        // Expired between the two calls: try once more.
        return (await client.set(k(key), 'busy', 'PX', ms, 'NX')) === 'OK' ? 'new' : 'busy';
      }),
    complete: (key, ttlMs) =>
      wrap('dedup complete', async () => {
        await client.set(k(key), 'done', 'PX', Math.max(1, Math.ceil(ttlMs)));
      }),
    release: (key) =>
      wrap('dedup release', async () => {
        await client.eval(RELEASE, 1, k(key));
      }),
    completeIn(multi, key, ttlMs) {
      multi.set(k(key), 'done', 'PX', Math.max(1, Math.ceil(ttlMs)));
      return multi;
    },
    close,
  };
}
