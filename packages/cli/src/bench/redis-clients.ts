import { ConfigError, ConnectionError } from '@agentbus/core';
import type * as Bullmq from 'bullmq';
import type * as Ioredis from 'ioredis';
import type * as NodeRedis from 'redis';

/** The two Node Redis clients the raw Streams baseline runs on. */
export type RedisClientKind = 'ioredis' | 'node-redis';

export const REDIS_CLIENT_KINDS: readonly RedisClientKind[] = Object.freeze(['ioredis', 'node-redis']);

/** What the benchmark asks for when a client library of the Redis comparison is missing. */
export const REDIS_BENCH_INSTALL_HINT = 'install ioredis/redis/bullmq to run the Redis comparison';

/**
 * Loads an optional client library. The Redis comparison's libraries are devDependencies, so a
 * production install without them fails here, with a ConfigError saying what to install,
 * rather than when the CLI starts.
 */
export async function importOptional<T>(name: string, load: () => Promise<T>): Promise<T> {
  try {
    return await load();
  } catch (err) {
    if ((err as { code?: unknown }).code === 'ERR_MODULE_NOT_FOUND') {
      throw new ConfigError(`cannot load '${name}'; ${REDIS_BENCH_INSTALL_HINT}`, { path: 'transport', cause: err });
    }
    throw err;
  }
}

export const loadIoredis = (): Promise<typeof Ioredis> => importOptional('ioredis', () => import('ioredis'));
export const loadNodeRedis = (): Promise<typeof NodeRedis> => importOptional('redis', () => import('redis'));
export const loadBullmq = (): Promise<typeof Bullmq> => importOptional('bullmq', () => import('bullmq'));

/** An entry id as the client returns it. */
export type StreamId = string | Buffer;

/**
 * One Redis connection as the raw Streams baseline uses it, the same few commands over either
 * client. Entries carry two fields: `t` (the send stamp) and `b` (the payload bytes).
 */
export interface StreamConnection {
  /** `XGROUP CREATE key group 0 MKSTREAM`. */
  createGroup(key: string, group: string): Promise<void>;
  /** `count` pipelined XADDs, one write to the socket and one wait for the replies. */
  addMany(key: string, count: number, sentAtMs: number, body: Buffer): Promise<void>;
  addOne(key: string, sentAtMs: number, body: Buffer): Promise<void>;
  /**
   * `XREADGROUP GROUP group consumer COUNT count BLOCK blockMs STREAMS key >`; calls
   * `onEntry` with each entry's send stamp and resolves with the ids read (none after a timeout).
   */
  readGroup(
    key: string,
    group: string,
    consumer: string,
    count: number,
    blockMs: number,
    onEntry: (sentAtMs: number) => void,
  ): Promise<StreamId[]>;
  ack(key: string, group: string, ids: StreamId[]): Promise<void>;
  del(keys: readonly string[]): Promise<void>;
  quit(): Promise<void>;
}

const stamp = (b: Buffer) => Number(b.toString('latin1'));

type StreamEntries = [id: Buffer, fields: Buffer[]][];
/** RESP2: `[[key, entries]]`; RESP3 maps as ioredis 6 returns them by default, flattened: `[key, entries]`. */
type StreamsReply = [Buffer, StreamEntries][] | [Buffer, StreamEntries];

/** The entries of the one stream an XREADGROUP named, whichever protocol replied. */
function entriesOf(reply: StreamsReply | null): StreamEntries | undefined {
  if (!reply || reply.length === 0) return undefined;
  return Buffer.isBuffer(reply[0]) ? (reply[1] as StreamEntries) : (reply[0] as [Buffer, StreamEntries])[1];
}

/** Calls `onEntry` with each entry's send stamp (its first field's value); returns the ids. */
function takeEntries(entries: StreamEntries, onEntry: (sentAtMs: number) => void): Buffer[] {
  const ids: Buffer[] = new Array(entries.length);
  for (let i = 0; i < entries.length; i++) {
    const [id, fields] = entries[i] as [Buffer, Buffer[]];
    ids[i] = id;
    onEntry(stamp(fields[1] as Buffer));
  }
  return ids;
}

/** `url` without its password, for messages. */
export function redactRedisUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password !== '') parsed.password = '***';
    return parsed.toString();
  } catch {
    return '(an invalid URL)';
  }
}

/** Extra ioredis options, e.g. `maxRetriesPerRequest: null` for BullMQ's workers. */
type IoredisOptions = Ioredis.RedisOptions;

/**
 * An ioredis connection to `url`, ready; rejects with ConnectionError naming the server and
 * the cause if Redis is unreachable. A benchmark fails on a lost connection rather than
 * measuring reconnects, so it never reconnects.
 */
export async function connectIoredisClient(url: string, options: IoredisOptions = {}): Promise<Ioredis.Redis> {
  const { Redis } = await loadIoredis();
  const client = new Redis(url, { ...options, lazyConnect: true, retryStrategy: () => null });
  let lastError: unknown;
  // Later failures reach the caller as rejected commands; the event would only print them twice.
  client.on('error', (err) => {
    lastError = err;
  });
  try {
    await client.connect();
  } catch (err) {
    client.disconnect();
    const cause = lastError ?? err;
    throw new ConnectionError(`cannot connect to Redis at ${redactRedisUrl(url)}: ${String(cause)}`, { cause });
  }
  return client;
}

/** Opens a connection of `kind` to `url`; resolves once it is ready, rejects if Redis is unreachable. */
export function connectStreams(kind: RedisClientKind, url: string): Promise<StreamConnection> {
  return kind === 'ioredis' ? connectIoredis(url) : connectNodeRedis(url);
}

async function connectIoredis(url: string): Promise<StreamConnection> {
  const client = await connectIoredisClient(url);
  return {
    async createGroup(key, group) {
      await client.xgroup('CREATE', key, group, '0', 'MKSTREAM');
    },
    async addMany(key, count, sentAtMs, body) {
      const t = String(sentAtMs);
      const pipeline = client.pipeline();
      for (let i = 0; i < count; i++) pipeline.xadd(key, '*', 't', t, 'b', body);
      const results = await pipeline.exec();
      for (const [err] of results ?? []) if (err) throw err;
    },
    async addOne(key, sentAtMs, body) {
      await client.xadd(key, '*', 't', String(sentAtMs), 'b', body);
    },
    async readGroup(key, group, consumer, count, blockMs, onEntry) {
      const reply = (await client.callBuffer(
        'XREADGROUP',
        'GROUP',
        group,
        consumer,
        'COUNT',
        count,
        'BLOCK',
        blockMs,
        'STREAMS',
        key,
        '>',
      )) as StreamsReply | null;
      const entries = entriesOf(reply);
      if (!entries) return [];
      return takeEntries(entries, onEntry);
    },
    async ack(key, group, ids) {
      await client.xack(key, group, ...ids);
    },
    async del(keys) {
      if (keys.length > 0) await client.del(...keys);
    },
    async quit() {
      if (client.status !== 'end') await client.quit();
    },
  };
}

async function connectNodeRedis(url: string): Promise<StreamConnection> {
  const { createClient, RESP_TYPES } = await loadNodeRedis();
  const client = createClient({ url, socket: { reconnectStrategy: false } });
  let lastError: unknown;
  client.on('error', (err) => {
    lastError = err;
  });
  try {
    await client.connect();
  } catch (err) {
    const cause = lastError ?? err;
    throw new ConnectionError(`cannot connect to Redis at ${redactRedisUrl(url)}: ${String(cause)}`, { cause });
  }
  // Replies as Buffers, like ioredis's *Buffer commands: the payload is never decoded.
  const raw = client.withTypeMapping({ [RESP_TYPES.BLOB_STRING]: Buffer });
  return {
    async createGroup(key, group) {
      await client.xGroupCreate(key, group, '0', { MKSTREAM: true });
    },
    async addMany(key, count, sentAtMs, body) {
      const t = String(sentAtMs);
      const multi = client.multi();
      for (let i = 0; i < count; i++) multi.xAdd(key, '*', { t, b: body });
      await multi.execAsPipeline();
    },
    async addOne(key, sentAtMs, body) {
      await client.xAdd(key, '*', { t: String(sentAtMs), b: body });
    },
    async readGroup(key, group, consumer, count, blockMs, onEntry) {
      // The raw command, as ioredis's callBuffer above: xReadGroup() would build an object per
      // entry first. node-redis 6 speaks RESP3, whose map reply arrives as `{ [key]: entries }`.
      const reply = (await raw.sendCommand([
        'XREADGROUP',
        'GROUP',
        group,
        consumer,
        'COUNT',
        String(count),
        'BLOCK',
        String(blockMs),
        'STREAMS',
        key,
        '>',
      ])) as Record<string, StreamEntries> | null;
      const entries = Array.isArray(reply) ? entriesOf(reply as StreamsReply) : reply?.[key];
      if (!entries) return [];
      return takeEntries(entries, onEntry);
    },
    async ack(key, group, ids) {
      await client.xAck(key, group, ids);
    },
    async del(keys) {
      if (keys.length > 0) await client.del([...keys]);
    },
    async quit() {
      if (client.isOpen) await client.close();
    },
  };
}

/**
 * Deletes the keys matching `patterns` (SCAN + DEL, never KEYS); resolves with how many went.
 * For what the benchmark cannot name key by key, e.g. the agentbus transport's streams of a run.
 */
export async function deleteKeysMatching(url: string, patterns: readonly string[]): Promise<number> {
  const client = await connectIoredisClient(url);
  let deleted = 0;
  try {
    for (const match of patterns) {
      let cursor = '0';
      do {
        const [next, keys] = await client.scan(cursor, 'MATCH', match, 'COUNT', 1000);
        cursor = next;
        if (keys.length > 0) deleted += await client.del(...keys);
      } while (cursor !== '0');
    }
  } finally {
    await client.quit();
  }
  return deleted;
}
