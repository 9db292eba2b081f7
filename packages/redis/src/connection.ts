import { Cluster, Redis, type RedisOptions } from 'ioredis';
import { DECLARE, DROP_STREAM, FORGET, RENEW } from './group-scripts.js';
import type { ResolvedRedisOptions } from './options.js';
import { ACK, BURY, CLAIM, EXTEND, PUBLISH, REPLAY, REQUEUE, TRIM } from './scripts.js';

/** A script reply in Buffer mode: nested arrays of Buffers and integers. */
export type Reply = Buffer | number | null | Reply[];

/** The scripts, registered on a client with `defineCommand` (EVALSHA, EVAL on NOSCRIPT). */
export interface ScriptCommands {
  agentbusPublish(numKeys: number, ...args: (string | number | Buffer)[]): Promise<number>;
  agentbusClaimBuffer(numKeys: number, ...args: (string | number)[]): Promise<Reply>;
  agentbusAck(numKeys: number, ...args: (string | number)[]): Promise<number>;
  agentbusExtend(numKeys: number, ...args: (string | number)[]): Promise<number>;
  agentbusRequeue(numKeys: number, ...args: (string | number)[]): Promise<number>;
  agentbusBury(numKeys: number, ...args: (string | number)[]): Promise<string | null>;
  agentbusReplay(numKeys: number, ...args: (string | number)[]): Promise<number>;
  agentbusDeclare(numKeys: number, ...args: (string | number)[]): Promise<[string, string]>;
  agentbusRenew(numKeys: number, ...args: (string | number)[]): Promise<[number, string]>;
  agentbusForget(numKeys: number, ...args: (string | number)[]): Promise<string | null>;
  agentbusDropStream(numKeys: number, ...args: (string | number)[]): Promise<number>;
  agentbusTrim(numKeys: number, ...args: (string | number)[]): Promise<[number, string]>;
}

export type Client = (Redis | Cluster) & ScriptCommands;

const SCRIPTS = {
  agentbusPublish: PUBLISH,
  agentbusClaim: CLAIM,
  agentbusAck: ACK,
  agentbusExtend: EXTEND,
  agentbusRequeue: REQUEUE,
  agentbusBury: BURY,
  agentbusReplay: REPLAY,
  agentbusDeclare: DECLARE,
  agentbusRenew: RENEW,
  agentbusForget: FORGET,
  agentbusDropStream: DROP_STREAM,
  agentbusTrim: TRIM,
};

/** Registers the scripts on `client` (idempotent per client). */
export function withScripts(client: Redis | Cluster): Client {
  const c = client as Client & { __agentbusScripts?: boolean };
  if (!c.__agentbusScripts) {
    for (const [name, lua] of Object.entries(SCRIPTS)) client.defineCommand(name, { lua });
    c.__agentbusScripts = true;
  }
  return c;
}

/** Exponential backoff with jitter between reconnect attempts. */
export function retryStrategy(o: ResolvedRedisOptions): (times: number) => number {
  return (times) => {
    const cap = Math.min(o.reconnect.maxMs, o.reconnect.initialMs * 2 ** Math.min(times - 1, 20));
    return Math.round(cap / 2 + Math.random() * (cap / 2));
  };
}

/** Options of the connections that send commands (not blocking reads). */
function commandOptions(o: ResolvedRedisOptions): RedisOptions {
  return {
    lazyConnect: true,
    enableAutoPipelining: true,
    // A command waits through this many reconnect attempts (about 15 s with the default backoff)
    // before it fails with a retryable ConnectionError.
    maxRetriesPerRequest: 10,
    retryStrategy: retryStrategy(o),
  };
}

/** The command connection the transport owns, created from the URL. */
export function createClient(o: ResolvedRedisOptions): Client {
  return withScripts(new Redis(o.url, { ...commandOptions(o), ...o.redisOptions }));
}

/**
 * The consumers' connection: claims and settles, kept apart from publishes so that a claim never
 * waits behind a large publish batch in the same TCP stream.
 */
export function consumerClient(client: Redis | Cluster, o: ResolvedRedisOptions): Client {
  if (client instanceof Cluster) return withScripts(client.duplicate());
  return withScripts(client.duplicate(commandOptions(o)));
}

/** A connection of its own for blocking reads and pub/sub, same server and options. */
export function duplicateClient(client: Redis | Cluster, o: ResolvedRedisOptions): Redis | Cluster {
  if (client instanceof Cluster) return client.duplicate();
  return client.duplicate({ lazyConnect: true, maxRetriesPerRequest: null, retryStrategy: retryStrategy(o) });
}

export function isCluster(client: Redis | Cluster): client is Cluster {
  return client instanceof Cluster;
}
