import type { Middleware } from '@agentbus/core';

/** Seconds of per-second history kept for the dashboard's live chart. */
export const HISTORY_SECONDS = 120;
/** Topics and groups remembered at most; the least recently active are forgotten first. */
export const MAX_TRACKED = 1_000;
/** Patterns listed per group at most (a group may be joined with ever new patterns). */
export const MAX_PATTERNS_PER_GROUP = 32;

export interface TopicActivity {
  readonly topic: string;
  readonly published: number;
  readonly lastPublishedAtMs: number;
}

export interface GroupActivity {
  readonly group: string;
  readonly patterns: readonly string[];
  readonly delivered: number;
  readonly failed: number;
  readonly lastDeliveredAtMs: number | undefined;
}

/** One second of the throughput history. */
export interface ActivitySample {
  /** Start of the second (epoch ms). */
  readonly atMs: number;
  readonly published: number;
  readonly delivered: number;
}

interface TopicEntry {
  published: number;
  lastPublishedAtMs: number;
}

interface GroupEntry {
  patterns: Set<string>;
  delivered: number;
  failed: number;
  lastDeliveredAtMs: number | undefined;
}

/**
 * What this gateway process has seen go through its bus: topics published, groups consumed and a
 * per-second throughput history. It feeds `GET /v1/stats` and the dashboard; backlogs come from
 * the transport. Bounded: at most {@link MAX_TRACKED} topics and groups.
 */
export class Activity {
  readonly #topics = new Map<string, TopicEntry>();
  readonly #groups = new Map<string, GroupEntry>();
  readonly #samples: { atMs: number; published: number; delivered: number }[] = [];
  readonly #now: () => number;

  constructor(now: () => number = Date.now) {
    this.#now = now;
  }

  /** A bus middleware that records publishes and deliveries (add it once). */
  middleware(): Middleware {
    return {
      name: 'gateway-activity',
      publish: (ctx, next) => {
        this.published(ctx.envelope.topic);
        return next();
      },
      consume: (ctx, next) => {
        this.delivered(ctx.group, ctx.pattern);
        const done = next();
        done.catch(() => this.failed(ctx.group));
        return done;
      },
    };
  }

  published(topic: string, count = 1): void {
    const now = this.#now();
    let e = this.#topics.get(topic);
    if (e) this.#topics.delete(topic);
    else {
      e = { published: 0, lastPublishedAtMs: now };
      this.#trim(this.#topics);
    }
    e.published += count;
    e.lastPublishedAtMs = now;
    this.#topics.set(topic, e);
    this.#sample(now).published += count;
  }

  delivered(group: string, pattern: string): void {
    const now = this.#now();
    const e = this.#group(group);
    // Most recently active last: the groups forgotten first are those idle longest.
    this.#groups.delete(group);
    this.#groups.set(group, e);
    this.#addPattern(e, pattern);
    e.delivered++;
    e.lastDeliveredAtMs = now;
    this.#sample(now).delivered++;
  }

  failed(group: string): void {
    this.#group(group).failed++;
  }

  /** Registers a group (a WebSocket client's subscription) so that stats show it before its first delivery. */
  watch(group: string, pattern?: string): void {
    const e = this.#group(group);
    if (pattern !== undefined) this.#addPattern(e, pattern);
  }

  /** Forgets a group that no longer exists (an ephemeral WebSocket group once its subscription closed). */
  forget(group: string): void {
    this.#groups.delete(group);
  }

  #addPattern(e: GroupEntry, pattern: string): void {
    if (e.patterns.size < MAX_PATTERNS_PER_GROUP || e.patterns.has(pattern)) e.patterns.add(pattern);
  }

  topics(): TopicActivity[] {
    return [...this.#topics].map(([topic, e]) => ({ topic, ...e })).sort((a, b) => a.topic.localeCompare(b.topic));
  }

  groups(): GroupActivity[] {
    return [...this.#groups]
      .map(([group, e]) => ({
        group,
        patterns: [...e.patterns],
        delivered: e.delivered,
        failed: e.failed,
        lastDeliveredAtMs: e.lastDeliveredAtMs,
      }))
      .sort((a, b) => a.group.localeCompare(b.group));
  }

  /** Per-second samples of the last {@link HISTORY_SECONDS} seconds, oldest first, seconds without traffic included. */
  history(): ActivitySample[] {
    const nowSec = Math.floor(this.#now() / 1000) * 1000;
    const bySecond = new Map(this.#samples.map((s) => [s.atMs, s]));
    const out: ActivitySample[] = [];
    for (let t = nowSec - (HISTORY_SECONDS - 1) * 1000; t <= nowSec; t += 1000) {
      const s = bySecond.get(t);
      out.push({ atMs: t, published: s?.published ?? 0, delivered: s?.delivered ?? 0 });
    }
    return out;
  }

  #group(group: string): GroupEntry {
    let e = this.#groups.get(group);
    if (!e) {
      this.#trim(this.#groups);
      e = { patterns: new Set(), delivered: 0, failed: 0, lastDeliveredAtMs: undefined };
      this.#groups.set(group, e);
    }
    return e;
  }

  #trim(map: Map<string, unknown>): void {
    if (map.size < MAX_TRACKED) return;
    const oldest = map.keys().next();
    if (!oldest.done) map.delete(oldest.value);
  }

  #sample(now: number): { atMs: number; published: number; delivered: number } {
    const atMs = Math.floor(now / 1000) * 1000;
    const last = this.#samples[this.#samples.length - 1];
    if (last && last.atMs === atMs) return last;
    const s = { atMs, published: 0, delivered: 0 };
    this.#samples.push(s);
    while (this.#samples.length > 0 && (this.#samples[0] as { atMs: number }).atMs <= atMs - HISTORY_SECONDS * 1000)
      this.#samples.shift();
    return s;
  }
}
