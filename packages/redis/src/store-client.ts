import { ConfigError } from '@agentbus/core';
import { type Cluster, Redis } from 'ioredis';
import { toBusError } from './redis-errors.js';

/** What every Redis store (idempotency, sequences, sagas, rate limits, events) takes to connect. */
export interface StoreClientOptions {
  /** `redis://…` (the store opens and closes its own connection), or a client you own. */
  readonly url?: string;
  readonly client?: Redis | Cluster;
  readonly keyPrefix?: string;
}

/** A store's connection, key prefix and error mapping. */
export interface StoreClient<C extends Redis | Cluster = Redis | Cluster> {
  readonly client: C;
  readonly prefix: string;
  /** Runs a Redis operation; failures become BusErrors (ConnectionError when the server is away). */
  wrap<T>(op: string, f: () => Promise<T>): Promise<T>;
  /** Quits the connection if the store opened it. */
  close(): Promise<void>;
}

/** Validates the options and opens (or adopts) the client of a Redis store. */
export function storeClient(options: StoreClientOptions, defaultPrefix: string): StoreClient {
  const prefix = options.keyPrefix ?? defaultPrefix;
  if (typeof prefix !== 'string' || prefix === '') {
    throw new ConfigError('must be a non-empty string', { path: 'keyPrefix' });
  }
  if (options.client !== undefined && options.url !== undefined) {
    throw new ConfigError('give a url or a client, not both', { path: 'client' });
  }
  const owned = options.client === undefined;
  const client =
    options.client ??
    new Redis(options.url ?? 'redis://127.0.0.1:6379', { lazyConnect: false, maxRetriesPerRequest: 3 });
  if (owned) client.on('error', () => {}); // failures surface on the commands, as BusErrors
  return {
    client,
    prefix,
    async wrap(op, f) {
      try {
        return await f();
      } catch (err) {
        throw toBusError(err, op);
      }
    },
    async close() {
      if (owned) await (client as Redis).quit().catch(() => client.disconnect());
    },
  };
}
