import { randomBytes } from 'node:crypto';
import type { Client } from './connection.js';
import { isCluster } from './connection.js';
import { CLUSTER_CLOCK_MARGIN_MS, declaredFor, type GroupEntry, parseGroupEntry, startId } from './group-registry.js';
import type { RedisKeys } from './keys.js';
import type { RedisGroups } from './redis-groups.js';

/** Consumers that hold nothing and were idle this long are forgotten by the retention pass. */
const CONSUMER_IDLE_FORGET_MS = 10 * 60_000;
/**
 * Entries freed per trim command at most: trimming a backlog of 100,000 1 KiB entries in one
 * XTRIM blocks Redis for about 20 ms (every client's p99 shows it); chunks keep each step short.
 */
const TRIM_CHUNK = 1_000;

/**
 * Trims one stream: the script attaches groups and trims the first chunk; then whole nodes
 * below the same bound go a chunk per command, and a last exact XTRIM takes the rest of the
 * node the bound falls in.
 */
async function trimStream(c: Client, key: string, boundMs: number, attach: string[]): Promise<number> {
  const [first, bound] = await c.agentbusTrim(1, key, boundMs, CONSUMER_IDLE_FORGET_MS, TRIM_CHUNK, ...attach);
  if (bound === '') return 0;
  let total = first;
  let n = first;
  while (n > 0) {
    n = await c.xtrim(key, 'MINID', '~', bound, 'LIMIT', TRIM_CHUNK);
    total += n;
  }
  return total + (await c.xtrim(key, 'MINID', bound));
}

/** When each registered group started receiving `topic` (server ms), for the groups bound to it. */
function groupsFor(topic: string, groups: ReadonlyMap<string, GroupEntry>): [string, number][] {
  const out: [string, number][] = [];
  for (const [name, entry] of groups) {
    const ms = declaredFor(entry, topic);
    if (ms !== undefined) out.push([name, ms]);
  }
  return out;
}

/**
 * Trims what every group has acknowledged. For each topic's streams it first attaches the
 * registered groups that match but have not read them yet (at the time they were declared), so
 * they count; then it trims below the oldest entry any group still needs. The bound never passes
 * the time the registry was read, so a group declared meanwhile loses nothing. One process runs
 * it at a time (a lock key). First it removes the ephemeral groups whose deadline passed (their
 * process died); last it clears again the ephemeral groups removed while it ran, which it may
 * have attached to a stream once more.
 */
export class RetentionPass {
  readonly #token = randomBytes(8).toString('hex');

  constructor(
    private readonly client: () => Promise<Client>,
    private readonly keys: RedisKeys,
    private readonly maxAgeMs: number,
    private readonly registry: RedisGroups,
  ) {}

  /** Runs a pass unless another process holds the lock for `lockMs`; resolves with entries trimmed. */
  async runLocked(lockMs: number): Promise<number> {
    const c = await this.client();
    const got = await c.set(this.keys.trimLock, this.#token, 'PX', Math.max(1, Math.round(lockMs)), 'NX');
    return got === 'OK' ? this.run() : 0;
  }

  /** One full pass over every topic; resolves with the number of entries trimmed. */
  async run(): Promise<number> {
    const c = await this.client();
    const [sec, micro] = await c.time();
    const snapshotMs = Number(sec) * 1000 + Math.floor(Number(micro) / 1000);
    const [rawGroups, topics] = await Promise.all([c.hgetall(this.keys.groups), c.smembers(this.keys.topics)]);
    const expired = await this.registry.sweep(rawGroups, snapshotMs);
    const groups = new Map<string, GroupEntry>();
    for (const [name, json] of Object.entries(rawGroups)) {
      if (expired.has(name)) continue;
      // A damaged entry is skipped: that group does not hold retention back.
      const entry = parseGroupEntry(json);
      if (entry) groups.set(name, entry);
    }
    const margin = isCluster(c) ? CLUSTER_CLOCK_MARGIN_MS : 0;
    const bound = (this.maxAgeMs > 0 ? snapshotMs - this.maxAgeMs : snapshotMs) - margin;
    const calls: Promise<number>[] = [];
    for (const topic of topics) {
      const matching = groupsFor(topic, groups);
      const attach = matching.flatMap(([g, ms]) => [g, startId(ms - margin)]);
      for (const key of this.keys.streams(topic)) {
        calls.push(trimStream(c, key, bound, attach));
      }
      for (const [g] of matching) {
        calls.push(trimStream(c, this.keys.retry(topic, g), bound, [g, '0']));
      }
    }
    const trimmed = await Promise.all(calls);
    const ephemeral = [...groups].filter(([, e]) => e.ephemeral !== undefined);
    if (ephemeral.length > 0) {
      const still = new Set(await c.hkeys(this.keys.groups));
      await Promise.all(
        ephemeral.filter(([name]) => !still.has(name)).map(([name, e]) => this.registry.clear(name, e)),
      );
    }
    return trimmed.reduce((a, b) => a + b, 0);
  }
}
