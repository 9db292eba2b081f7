import {
  ConfigError,
  compareSagas,
  type SagaRepository,
  type SagaState,
  type SagaStatus,
  sagaFilterLimit,
  sagaFilterStatuses,
} from '@agentbus/core';
import type { Cluster, Redis } from 'ioredis';
import { storeClient } from './store-client.js';

export interface RedisSagaRepositoryOptions {
  /** `redis://…` (the repository opens and closes its own connection), or a client you own. */
  readonly url?: string;
  readonly client?: Redis | Cluster;
  /** Prefix of its keys (default `agentbus:saga`; on a Cluster give it a hash tag: `{agentbus:saga}`). */
  readonly keyPrefix?: string;
}

/** A Redis saga repository with its close() (it quits the connection it opened). */
export interface RedisSagaRepository extends SagaRepository {
  close(): Promise<void>;
}

/** Every status, in the order of the index keys the scripts get. */
const STATUSES: readonly SagaStatus[] = ['running', 'compensating', 'completed', 'compensated', 'failed'];

/** KEYS[1] the saga's hash, KEYS[2] its status index; ARGV version, status, name, createdAtMs, json, id. */
const CREATE = `
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 's', ARGV[2], 'n', ARGV[3], 'c', ARGV[4], 'j', ARGV[5])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[6])
return 1`;

/**
 * KEYS[1] the saga's hash, KEYS[2..] the status indexes (in STATUSES order); ARGV previous
 * version, version, status, json, id, index of the status (1-based). Writes only over the previous version.
 */
const SAVE = `
local v = redis.call('HGET', KEYS[1], 'v')
if not v or tonumber(v) ~= tonumber(ARGV[1]) then return 0 end
local old = redis.call('HGET', KEYS[1], 's')
redis.call('HSET', KEYS[1], 'v', ARGV[2], 's', ARGV[3], 'j', ARGV[4])
if old ~= ARGV[3] then
  local c = redis.call('HGET', KEYS[1], 'c')
  for i = 2, #KEYS do redis.call('ZREM', KEYS[i], ARGV[5]) end
  redis.call('ZADD', KEYS[tonumber(ARGV[6]) + 1], c, ARGV[5])
end
return 1`;

/** KEYS[1] the saga's hash, KEYS[2..] the status indexes; ARGV id. */
const DELETE = `
local n = redis.call('DEL', KEYS[1])
for i = 2, #KEYS do redis.call('ZREM', KEYS[i], ARGV[1]) end
return n`;

/**
 * Saga state on Redis, shared by every process: a hash per saga (`<prefix>:s:<id>` with the
 * version, status and the state as JSON) and a sorted set of ids per status (by creation time)
 * for `list`. Create and save are scripts, so a save over a stale version changes nothing.
 */
export function redisSagaRepository(options: RedisSagaRepositoryOptions = {}): RedisSagaRepository {
  const { client, prefix, wrap, close } = storeClient(options, 'agentbus:saga');
  const hash = (id: string) => `${prefix}:s:${id}`;
  const index = (status: SagaStatus) => `${prefix}:idx:${status}`;
  const indexes = STATUSES.map(index);
  const statusIndex = (s: SagaStatus) => {
    const i = STATUSES.indexOf(s);
    if (i < 0) throw new ConfigError(`unknown saga status ${String(s)}`, { path: 'status' });
    return i + 1;
  };
  return {
    create: (s) =>
      wrap('saga create', async () => {
        statusIndex(s.status);
        const r = await client.eval(
          CREATE,
          2,
          hash(s.id),
          index(s.status),
          s.version,
          s.status,
          s.name,
          s.createdAtMs,
          JSON.stringify(s),
          s.id,
        );
        return Number(r) === 1;
      }),
    get: (id) =>
      wrap('saga get', async () => {
        const j = await client.hget(hash(id), 'j');
        return j === null ? undefined : (JSON.parse(j) as SagaState);
      }),
    save: (s) =>
      wrap('saga save', async () => {
        const i = statusIndex(s.status);
        const r = await client.eval(
          SAVE,
          1 + indexes.length,
          hash(s.id),
          ...indexes,
          s.version - 1,
          s.version,
          s.status,
          JSON.stringify(s),
          s.id,
          i,
        );
        return Number(r) === 1;
      }),
    list: (filter) =>
      wrap('saga list', async () => {
        const statuses = sagaFilterStatuses(filter) ?? STATUSES;
        const limit = sagaFilterLimit(filter);
        // Without a name filter each index needs only its first `limit` ids.
        const stop = limit === undefined || filter?.name ? -1 : limit - 1;
        const ids = new Set<string>();
        for (const st of statuses) for (const id of await client.zrange(index(st), '0', String(stop))) ids.add(id);
        if (ids.size === 0) return [];
        const pipeline = client.pipeline();
        for (const id of ids) pipeline.hget(hash(id), 'j');
        const out: SagaState[] = [];
        for (const [err, j] of (await pipeline.exec()) ?? []) {
          if (err) throw err;
          if (typeof j !== 'string') continue; // deleted meanwhile
          const s = JSON.parse(j) as SagaState;
          if (!filter?.name || s.name === filter.name) out.push(s);
        }
        out.sort(compareSagas);
        return limit === undefined ? out : out.slice(0, limit);
      }),
    delete: (id) =>
      wrap(
        'saga delete',
        async () => Number(await client.eval(DELETE, 1 + indexes.length, hash(id), ...indexes, id)) > 0,
      ),
    close,
  };
}
