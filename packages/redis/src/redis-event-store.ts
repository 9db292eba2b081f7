import {
  type CheckpointStore,
  ConfigError,
  createEventStore,
  type EventStore,
  type EventStoreEngine,
  type EventStoreOptions,
  type StoredEvent,
} from '@agentbus/core';
import { Cluster, Redis } from 'ioredis';
import { toBusError } from './redis-errors.js';

export interface RedisEventStoreOptions extends EventStoreOptions {
  /** `redis://…` (the store opens and closes its own connections), or a client you own. */
  readonly url?: string;
  readonly client?: Redis | Cluster;
  /**
   * Prefix of its keys (default `agentbus:es`). Every key of a store must be in one hash slot on a
   * Redis Cluster: use a hash tag, e.g. `{orders}:es`.
   */
  readonly keyPrefix?: string;
  /** Longest single XREAD BLOCK of a caught-up subscription's watcher (default 2,000 ms). */
  readonly blockMs?: number;
}

/** An event store in Redis, with its checkpoints in the same Redis. */
export interface RedisEventStore extends EventStore {
  readonly checkpoints: CheckpointStore;
}

/**
 * KEYS: [1] the stream's list of positions, [2] the global stream, [3] the position counter.
 * ARGV: [1] expected version (-1: any), [2] stream id, [3] event count, then per event
 * id, type, data JSON, metadata JSON, time. Returns {0, actual version} or {1, version before, first position}.
 */
const APPEND = `
local cur = redis.call('LLEN', KEYS[1])
local expected = tonumber(ARGV[1])
if expected >= 0 and cur ~= expected then return {0, cur} end
local n = tonumber(ARGV[3])
local first = 0
for i = 0, n - 1 do
  local b = 4 + i * 5
  local pos = redis.call('INCR', KEYS[3])
  if i == 0 then first = pos end
  redis.call('XADD', KEYS[2], pos .. '-0', 's', ARGV[2], 'v', cur + i + 1, 'i', ARGV[b], 't', ARGV[b + 1],
    'd', ARGV[b + 2], 'm', ARGV[b + 3], 'at', ARGV[b + 4])
  redis.call('RPUSH', KEYS[1], pos)
end
return {1, cur, first}`;

/** KEYS: [1] the stream's list of positions, [2] the global stream. ARGV: from version, max. Entries as XRANGE returns them. */
const READ_STREAM = `
local from = tonumber(ARGV[1]) - 1
local ps = redis.call('LRANGE', KEYS[1], from, from + tonumber(ARGV[2]) - 1)
local out = {}
for i, p in ipairs(ps) do
  out[i] = redis.call('XRANGE', KEYS[2], p .. '-0', p .. '-0')[1]
end
return out`;

type Entry = [id: string, fields: string[]];

interface EventCommands {
  agentbusEsAppend(numKeys: number, ...args: (string | number)[]): Promise<number[]>;
  agentbusEsReadStream(numKeys: number, ...args: (string | number)[]): Promise<Entry[]>;
}

function withEventScripts(client: Redis | Cluster): (Redis | Cluster) & EventCommands {
  const c = client as (Redis | Cluster) & EventCommands & { __agentbusEsScripts?: boolean };
  if (!c.__agentbusEsScripts) {
    client.defineCommand('agentbusEsAppend', { lua: APPEND });
    client.defineCommand('agentbusEsReadStream', { lua: READ_STREAM });
    c.__agentbusEsScripts = true;
  }
  return c;
}

const positionOf = (id: string) => Number(id.slice(0, id.indexOf('-')));

function stored([id, fields]: Entry): StoredEvent {
  const f: Record<string, string> = {};
  for (let i = 0; i + 1 < fields.length; i += 2) f[fields[i] as string] = fields[i + 1] as string;
  return {
    streamId: f.s as string,
    version: Number(f.v),
    position: positionOf(id),
    id: f.i as string,
    type: f.t as string,
    data: JSON.parse(f.d as string),
    metadata: JSON.parse(f.m as string),
    time: f.at as string,
  };
}

interface Waiter {
  readonly after: number;
  readonly wake: () => void;
}

/**
 * Wakes caught-up subscriptions when anyone appends: one connection of its own blocks in XREAD on
 * the global stream from the lowest position a subscription waits after, while any waits.
 */
class AppendWatcher {
  readonly #waiters = new Set<Waiter>();
  #connection: Redis | Cluster | undefined;
  #running = false;
  #closed = false;

  constructor(
    private readonly client: Redis | Cluster,
    private readonly key: string,
    private readonly blockMs: number,
  ) {}

  async wait(after: number, signal: AbortSignal): Promise<void> {
    if (signal.aborted || this.#closed) return;
    // Appended before we block? (The watcher may be blocking from a later position.)
    const now = (await this.client.xrange(this.key, `${after + 1}-0`, '+', 'COUNT', 1)) as Entry[];
    if (now.length > 0 || signal.aborted) return;
    await new Promise<void>((resolve) => {
      const w: Waiter = {
        after,
        wake: () => {
          this.#waiters.delete(w);
          signal.removeEventListener('abort', w.wake);
          resolve();
        },
      };
      this.#waiters.add(w);
      signal.addEventListener('abort', w.wake, { once: true });
      void this.#run();
    });
  }

  async #run(): Promise<void> {
    if (this.#running) return;
    this.#running = true;
    try {
      let connection = this.#connection;
      if (connection === undefined) {
        connection = this.client instanceof Cluster ? this.client.duplicate() : this.client.duplicate();
        connection.on('error', () => {});
        this.#connection = connection;
      }
      while (this.#waiters.size > 0 && !this.#closed) {
        let from = Number.POSITIVE_INFINITY;
        for (const w of this.#waiters) from = Math.min(from, w.after);
        let reply: [string, Entry[]][] | null;
        try {
          reply = (await connection.xread('COUNT', 1, 'BLOCK', this.blockMs, 'STREAMS', this.key, `${from}-0`)) as
            | [string, Entry[]][]
            | null;
        } catch {
          // Lost connection or closed: after a pause (no busy loop while the connection is down),
          // let the subscriptions read, and back off, themselves.
          if (!this.#closed) await new Promise((r) => setTimeout(r, Math.min(this.blockMs, 1_000)));
          for (const w of [...this.#waiters]) w.wake();
          return;
        }
        const entry = reply?.[0]?.[1]?.[0];
        if (entry === undefined) continue;
        const position = positionOf(entry[0]);
        for (const w of [...this.#waiters]) if (w.after < position) w.wake();
      }
    } finally {
      this.#running = false;
    }
  }

  close(): void {
    this.#closed = true;
    for (const w of [...this.#waiters]) w.wake();
    this.#connection?.disconnect();
  }
}

/**
 * An event store in Redis, shared by every process: a global stream `<prefix>:all` holds the events,
 * each entry's id being its position (`<position>-0`); a list `<prefix>:s:<streamId>` holds a
 * stream's positions (its length is the version); `<prefix>:head` counts positions. One Lua script
 * checks the expected version and appends atomically. Caught-up subscriptions are woken by an
 * XREAD BLOCK on the global stream, so they see appends of other processes at once. Checkpoints are
 * a hash `<prefix>:checkpoints`. Durable as far as the server's persistence (AOF/RDB) is.
 */
export function redisEventStore(options: RedisEventStoreOptions = {}): RedisEventStore {
  const prefix = options.keyPrefix ?? 'agentbus:es';
  if (typeof prefix !== 'string' || prefix === '') {
    throw new ConfigError('must be a non-empty string', { path: 'keyPrefix' });
  }
  const blockMs = options.blockMs ?? 2_000;
  if (!Number.isSafeInteger(blockMs) || blockMs < 1) {
    throw new ConfigError(`must be a positive integer, got ${String(blockMs)}`, { path: 'blockMs' });
  }
  const owned = options.client === undefined;
  const client = withEventScripts(
    options.client ?? new Redis(options.url ?? 'redis://127.0.0.1:6379', { maxRetriesPerRequest: 3 }),
  );
  if (owned) client.on('error', () => {});
  const all = `${prefix}:all`;
  const head = `${prefix}:head`;
  const streamKey = (streamId: string) => `${prefix}:s:${streamId}`;
  const checkpointsKey = `${prefix}:checkpoints`;
  const watcher = new AppendWatcher(client, all, blockMs);
  const wrap = async <T>(op: string, f: () => Promise<T>): Promise<T> => {
    try {
      return await f();
    } catch (err) {
      throw toBusError(err, op);
    }
  };

  const engine: EventStoreEngine = {
    append: (streamId, events, expected) =>
      wrap('event append', async () => {
        const args: (string | number)[] = [expected ?? -1, streamId, events.length];
        for (const e of events) args.push(e.id, e.type, e.json, JSON.stringify(e.metadata), e.time);
        const [ok = 0, a = 0, b = 0] = await client.agentbusEsAppend(3, streamKey(streamId), all, head, ...args);
        if (ok !== 1) return { ok: false, actualVersion: a };
        return { ok: true, versionBefore: a, positions: events.map((_, i) => b + i) };
      }),
    readStream: (streamId, from, max) =>
      wrap('event read', async () =>
        (await client.agentbusEsReadStream(2, streamKey(streamId), all, from, max)).map(stored),
      ),
    readAll: (from, max) =>
      wrap('event read', async () =>
        ((await client.xrange(all, `${from}-0`, '+', 'COUNT', max)) as Entry[]).map(stored),
      ),
    version: (streamId) => wrap('event version', () => client.llen(streamKey(streamId))),
    head: () => wrap('event head', async () => Number((await client.get(head)) ?? 0)),
    waitForAppend: (position, signal) => wrap('event wait', () => watcher.wait(position, signal)),
    async close() {
      watcher.close();
      if (owned) await (client as Redis).quit().catch(() => client.disconnect());
    },
  };
  const checkpoints: CheckpointStore = {
    load: (name) => wrap('checkpoint load', async () => Number((await client.hget(checkpointsKey, name)) ?? 0)),
    save: (name, position) =>
      wrap('checkpoint save', async () => {
        await client.hset(checkpointsKey, name, position);
      }),
  };
  return Object.assign(createEventStore(engine, options), { checkpoints });
}
