import type { BlockedWorkflow, SequenceStore, WorkflowBlock } from '@agentbus/core';
import type { Cluster, Redis } from 'ioredis';
import { storeClient } from './store-client.js';

export interface RedisSequenceStoreOptions {
  /** `redis://…` (the store opens and closes its own connection), or a client you own. */
  readonly url?: string;
  readonly client?: Redis | Cluster;
  /** Prefix of its keys (default `agentbus:seq`). */
  readonly keyPrefix?: string;
}

/** A Redis sequence store with its close() (it quits the connection it opened). */
export interface RedisSequenceStore extends SequenceStore {
  close(): Promise<void>;
}

/** expected = max(expected, ARGV[1]); returns it. */
const ADVANCE = `
local cur = tonumber(redis.call('GET', KEYS[1]) or '1')
local n = tonumber(ARGV[1])
if n > cur then redis.call('SET', KEYS[1], n) return n end
return cur`;

/** Records the range ARGV[1]..ARGV[2] as skipped (KEYS[2]) and moves expected (KEYS[1]) past it. */
const SKIP = `
redis.call('RPUSH', KEYS[2], ARGV[1] .. ':' .. ARGV[2])
local cur = tonumber(redis.call('GET', KEYS[1]) or '1')
local n = tonumber(ARGV[2]) + 1
if n > cur then redis.call('SET', KEYS[1], n) end
return 1`;

/** Removes ARGV[1] from the skipped ranges in KEYS[1]; returns 1 if it was in one. */
const TAKE = `
local seq = tonumber(ARGV[1])
local ranges = redis.call('LRANGE', KEYS[1], 0, -1)
for _, r in ipairs(ranges) do
  local sep = string.find(r, ':', 1, true)
  local from = tonumber(string.sub(r, 1, sep - 1))
  local to = tonumber(string.sub(r, sep + 1))
  if seq >= from and seq <= to then
    redis.call('LREM', KEYS[1], 1, r)
    if from <= seq - 1 then redis.call('RPUSH', KEYS[1], from .. ':' .. (seq - 1)) end
    if seq + 1 <= to then redis.call('RPUSH', KEYS[1], (seq + 1) .. ':' .. to) end
    return 1
  end
end
return 0`;

/**
 * The sequencing middleware's store on Redis, shared by every process: `INCR` per workflow for
 * publish counters, a string per group and workflow for the expected sequence (moved forward only,
 * by a script), a list of skipped ranges, and one hash of blocks.
 */
export function redisSequenceStore(options: RedisSequenceStoreOptions = {}): RedisSequenceStore {
  const { client, prefix, wrap, close } = storeClient(options, 'agentbus:seq');
  const ctr = (wf: string) => `${prefix}:ctr:${wf}`;
  const exp = (g: string, wf: string) => `${prefix}:exp:${g}\u0000${wf}`;
  const skipped = (g: string, wf: string) => `${prefix}:skip:${g}\u0000${wf}`;
  const blocks = `${prefix}:blocks`;
  const field = (g: string, wf: string) => `${g}\u0000${wf}`;
  return {
    nextSequence: (wf) => wrap('sequence next', () => client.incr(ctr(wf))),
    expected: (g, wf) => wrap('sequence expected', async () => Number((await client.get(exp(g, wf))) ?? 1)),
    advance: (g, wf, seq) =>
      wrap('sequence advance', async () => Number(await client.eval(ADVANCE, 1, exp(g, wf), seq + 1))),
    skip: (g, wf, from, to) =>
      wrap('sequence skip', async () => {
        await client.eval(SKIP, 2, exp(g, wf), skipped(g, wf), from, to);
      }),
    takeSkipped: (g, wf, seq) =>
      wrap('sequence take skipped', async () => Number(await client.eval(TAKE, 1, skipped(g, wf), seq)) === 1),
    block: (g, wf, b: WorkflowBlock) =>
      wrap('sequence block', async () => {
        await client.hset(blocks, field(g, wf), JSON.stringify(b));
      }),
    blocked: (g, wf) =>
      wrap('sequence blocked', async () => {
        const v = await client.hget(blocks, field(g, wf));
        return v === null ? undefined : (JSON.parse(v) as WorkflowBlock);
      }),
    unblock: (g, wf) => wrap('sequence unblock', async () => (await client.hdel(blocks, field(g, wf))) > 0),
    listBlocked: (group) =>
      wrap('sequence list blocked', async () => {
        const all = await client.hgetall(blocks);
        const out: BlockedWorkflow[] = [];
        for (const [f, v] of Object.entries(all)) {
          const [g = '', wf = ''] = f.split('\u0000');
          if (group === undefined || g === group) out.push({ group: g, workflowId: wf, block: JSON.parse(v) });
        }
        return out.sort((a, b) => a.block.atMs - b.block.atMs);
      }),
    close,
  };
}
