import { ConfigError, type GroupStats } from '@agentbus/core';
import { type Client, isCluster } from './connection.js';
import {
  CLUSTER_CLOCK_MARGIN_MS,
  declaredFor,
  type GroupEntry,
  isLive,
  parseGroupEntry,
  startId,
} from './group-registry.js';
import type { RedisKeys } from './keys.js';

const ZERO: GroupStats = Object.freeze({ backlog: 0, inFlight: 0 });
/** Entries read per XRANGE when counting a backlog Redis cannot tell the lag of. */
const COUNT_CHUNK = 1_000;

async function serverNowMs(c: Client): Promise<number> {
  const [sec, micro] = await c.time();
  return Number(sec) * 1000 + Math.floor(Number(micro) / 1000);
}

/** The fields of one XINFO GROUPS row (a flat name/value list). */
function groupRow(row: unknown): Record<string, unknown> {
  const fields = row as unknown[];
  const out: Record<string, unknown> = {};
  for (let i = 0; i + 1 < fields.length; i += 2) out[String(fields[i])] = fields[i + 1];
  return out;
}

/** Entries of `key` from `start` (an XRANGE start: an id, or `(id` for after it) to the end. */
async function countFrom(c: Client, key: string, start: string): Promise<number> {
  let n = 0;
  let from = start;
  for (;;) {
    const entries = await c.xrange(key, from, '+', 'COUNT', COUNT_CHUNK);
    n += entries.length;
    if (entries.length < COUNT_CHUNK) return n;
    from = `(${(entries[entries.length - 1] as [string, string[]])[0]}`;
  }
}

/**
 * The group registry's lifecycle: declarations (durable or ephemeral), renewals, removal of an
 * ephemeral group with everything it holds, and the questions `routeCount` and `groupStats` ask.
 *
 * What an ephemeral group holds, removed with it: its registry entry, its consumer group on each
 * priority stream of every topic its patterns match, its retry stream, delayed set and
 * dead-letter stream per topic. A topic then read by no group at all (an inbox's) loses its
 * streams and its place in the topics set too.
 */
export class RedisGroups {
  constructor(
    private readonly client: () => Promise<Client>,
    private readonly keys: RedisKeys,
  ) {}

  /**
   * Declares `group` for `pattern`, ephemeral for `ttlMs` when ttlMs > 0. ConfigError when the
   * group exists as the other kind or is a live ephemeral group (it has its subscriber); an
   * ephemeral group of that name whose deadline passed is removed first.
   */
  async declare(group: string, pattern: string, ttlMs: number): Promise<GroupEntry> {
    const c = await this.client();
    for (let attempt = 0; ; attempt++) {
      const [status, json] = await c.agentbusDeclare(1, this.keys.groups, group, pattern, ttlMs);
      if (status === 'ok') return parseGroupEntry(json) ?? { patterns: {} };
      if (status === 'expired' && attempt === 0) {
        await this.#take(c, group, false);
        continue;
      }
      if (status === 'taken' || status === 'expired') {
        throw new ConfigError(`ephemeral group ${group} already has a subscriber`, { path: 'subscribe.group' });
      }
      throw new ConfigError(`group ${group} is ${status === 'durable' ? 'durable' : 'ephemeral'}`, {
        path: 'subscribe.ephemeral',
      });
    }
  }

  /**
   * Renews an ephemeral group for `ttlMs`. Resolves with its new entry when it had to be declared
   * afresh (it was removed after its deadline passed: the subscription starts over from now).
   */
  async renew(group: string, pattern: string, ttlMs: number): Promise<GroupEntry | undefined> {
    const c = await this.client();
    const [fresh, json] = await c.agentbusRenew(1, this.keys.groups, group, pattern, ttlMs);
    return fresh === 1 ? parseGroupEntry(json) : undefined;
  }

  /** Removes an ephemeral group and what it holds (its subscription closed). */
  async remove(group: string): Promise<void> {
    await this.#take(await this.client(), group, true);
  }

  /**
   * Removes the ephemeral groups of `registry` (a HGETALL of the groups hash) whose deadline
   * passed by `nowMs`; resolves with the names removed.
   */
  async sweep(registry: Readonly<Record<string, string>>, nowMs: number): Promise<Set<string>> {
    const removed = new Set<string>();
    const c = await this.client();
    for (const [name, json] of Object.entries(registry)) {
      const entry = parseGroupEntry(json);
      if (entry?.ephemeral === undefined || entry.ephemeral > nowMs) continue;
      if (await this.#take(c, name, false)) removed.add(name);
    }
    return removed;
  }

  /**
   * Removes what an ephemeral group that is out of the registry still holds on the topics its
   * entry matches (again: the retention pass may have attached it once more meanwhile).
   */
  async clear(group: string, entry: GroupEntry): Promise<void> {
    await this.#clear(await this.client(), group, entry);
  }

  /** The groups a message on `topic` would reach now: durable ones and live ephemeral ones. */
  async routeCount(topic: string): Promise<number> {
    const c = await this.client();
    const [nowMs, registry] = await Promise.all([serverNowMs(c), c.hgetall(this.keys.groups)]);
    let n = 0;
    for (const json of Object.values(registry)) {
      const entry = parseGroupEntry(json);
      if (entry && isLive(entry, nowMs) && declaredFor(entry, topic) !== undefined) n++;
    }
    return n;
  }

  /**
   * Over the topics the group's patterns match: backlog = entries of the priority streams and
   * the retry stream not yet delivered to the group (the consumer group's lag; counted with
   * XRANGE where Redis cannot tell it, or where the group has not read a stream yet) + its
   * delayed set; inFlight = its pending entries (held by a consumer of any process, including
   * those whose lease ran out and that are not reclaimed yet). Zeros for an unknown group.
   */
  async stats(group: string): Promise<GroupStats> {
    const c = await this.client();
    const entry = parseGroupEntry(await c.hget(this.keys.groups, group));
    if (!entry) return ZERO;
    const margin = isCluster(c) ? CLUSTER_CLOCK_MARGIN_MS : 0;
    const topics = (await c.smembers(this.keys.topics)).flatMap((t) => {
      const ms = declaredFor(entry, t);
      return ms === undefined ? [] : [[t, startId(ms - margin)] as const];
    });
    const parts = await Promise.all(topics.map(([t, since]) => this.#topicStats(c, group, t, since)));
    return parts.reduce((a, b) => ({ backlog: a.backlog + b.backlog, inFlight: a.inFlight + b.inFlight }), ZERO);
  }

  async #topicStats(c: Client, group: string, topic: string, since: string): Promise<GroupStats> {
    const retry = this.keys.retry(topic, group);
    const counts = await Promise.all([
      c.zcard(this.keys.delayed(topic, group)).then((n) => ({ backlog: n, inFlight: 0 })),
      ...[...this.keys.streams(topic), retry].map(async (key): Promise<GroupStats> => {
        let rows: unknown[];
        try {
          rows = (await c.xinfo('GROUPS', key)) as unknown[];
        } catch {
          return ZERO; // no such stream
        }
        const info = rows.map(groupRow).find((g) => String(g.name) === group);
        if (!info) return { backlog: key === retry ? 0 : await countFrom(c, key, since), inFlight: 0 };
        const lag = info.lag;
        const backlog =
          typeof lag === 'number' ? lag : await countFrom(c, key, `(${String(info['last-delivered-id'])}`);
        return { backlog, inFlight: Number(info.pending) || 0 };
      }),
    ]);
    return counts.reduce((a, b) => ({ backlog: a.backlog + b.backlog, inFlight: a.inFlight + b.inFlight }), ZERO);
  }

  /** Takes an ephemeral group out of the registry (`force`, or once expired) and clears what it holds. */
  async #take(c: Client, group: string, force: boolean): Promise<boolean> {
    const json = await c.agentbusForget(1, this.keys.groups, group, force ? '1' : '0');
    const entry = parseGroupEntry(json);
    if (!entry) return false;
    await this.#clear(c, group, entry);
    return true;
  }

  async #clear(c: Client, group: string, entry: GroupEntry): Promise<void> {
    const k = this.keys;
    // A literal pattern's topic may be missing from the set (it is added by publishes), not its keys.
    const literal = Object.keys(entry.patterns).filter((p) => !p.split('.').some((s) => s === '*' || s === '>'));
    const matched = (await c.smembers(k.topics)).filter((t) => declaredFor(entry, t) !== undefined);
    const topics = [...new Set([...literal, ...matched])];
    await Promise.all(
      topics.map((t) =>
        Promise.all([
          ...k.streams(t).map((s) => c.xgroup('DESTROY', s, group).catch(() => 0)),
          c.del(k.retry(t, group), k.delayed(t, group), k.deadLetter(t, group)),
          c.srem(k.deadLetters, k.deadLetter(t, group)),
        ]),
      ),
    );
    // Topics no group is bound to any more (a reply inbox's) go too, but for what a group
    // declared after this read needs (see DROP_STREAM).
    const boundMs = await serverNowMs(c);
    const registry = await c.hgetall(k.groups);
    const bound = Object.values(registry)
      .map((json) => parseGroupEntry(json))
      .filter((e): e is GroupEntry => e !== undefined);
    const margin = isCluster(c) ? CLUSTER_CLOCK_MARGIN_MS : 0;
    const orphans = topics.filter((t) => !bound.some((e) => declaredFor(e, t) !== undefined));
    await Promise.all(
      orphans.map(async (t) => {
        const gone = await Promise.all(
          k.streams(t).map((s) => c.agentbusDropStream(1, s, startId(boundMs - margin)).catch(() => 0)),
        );
        // A publish re-adds its topic to the set, so one that comes meanwhile is found again.
        if (gone.every((g) => g === 1)) await c.srem(k.topics, t);
      }),
    );
  }
}
