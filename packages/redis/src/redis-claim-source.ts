import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import {
  type ClaimSource,
  type Clock,
  type InboundMessage,
  MAX_PRIORITY,
  ManagedDelivery,
  type PollingSubscription,
  topicMatches,
} from '@agentbus/core';
import type { Cluster, Redis } from 'ioredis';
import type { Reply } from './connection.js';
import { CLUSTER_CLOCK_MARGIN_MS, declaredFor, type GroupEntry, parseGroupEntry, startId } from './group-registry.js';
import { toBusError } from './redis-errors.js';
import { type LeaseContext, RedisLease } from './redis-lease.js';

/** Keys per topic in a claim call: 10 priority streams, the retry stream, the delayed set. */
const KEYS_PER_TOPIC = 12;
/** Delayed entries moved into a retry stream per topic and claim, at most. */
const MOVE_LIMIT = 100;
const BELL_RETRY_MS = 200;
const EMPTY = Buffer.alloc(0);
const EMPTY_HEADERS: Readonly<Record<string, string>> = Object.freeze({});

/** What a claim source needs of its transport. */
export interface SourceContext extends LeaseContext {
  readonly clock: Clock;
  readonly clustered: boolean;
  readonly closed: boolean;
  readonly pollIntervalMs: number;
  readonly blockMs: number;
  readonly discoveryIntervalMs: number;
  /** A new connection for blocking reads (standalone and Sentinel only). */
  duplicate(): Redis | Cluster;
}

/** The keys of one claim call (a script stays in one slot on a cluster: one topic per call there). */
interface Partition {
  readonly topics: readonly string[];
  readonly keys: readonly string[];
  readonly since: readonly string[];
  /** Where the next reclaim of each stream resumes (XAUTOCLAIM cursors). */
  cursors: string[];
}

/** The one stream a single-topic subscription reads directly for a while (see #fastClaim). */
interface FastPath {
  readonly partitions: Partition[];
  readonly topic: string;
  readonly key: string;
  /** The key's place among the topic's keys. */
  readonly index: number;
}

/** How long the direct-read hot path runs between full claims (priorities, retries, reclaims). */
const FAST_PATH_MS = 50;

/** A unique consumer name per subscription: the lease owner in the group's pending entries. */
function consumerName(): string {
  return `${hostname()}:${process.pid}:${randomBytes(6).toString('hex')}`;
}

function text(b: Reply): string {
  return Buffer.isBuffer(b) ? b.toString('utf8') : String(b);
}

/**
 * Claims one subscription's deliveries from the streams of the topics its pattern matches, with
 * one script call per claim (one per topic on a cluster). While idle it waits on a blocking XREAD
 * of those streams (the "doorbell", its own connection) so a new entry wakes it at once; a
 * pattern subscription also looks for new topics.
 */
export class RedisClaimSource implements ClaimSource {
  readonly consumer = consumerName();
  readonly wildcard: boolean;
  #topics: string[] = [];
  #registry: GroupEntry;
  #since = new Map<string, string>();
  #sub: PollingSubscription | undefined;
  #closed = false;
  #lastReclaimAt = 0;
  #dueTimer: NodeJS.Timeout | undefined;
  #discoveryTimer: NodeJS.Timeout | undefined;
  #bell: Redis | undefined;
  #bellId: number | undefined;
  #bellLoop: Promise<void> | undefined;
  #idleWaiter: ((tails: Map<string, string>) => void) | undefined;
  #topicsChanged = false;
  #partitions: Partition[] | undefined;
  #fast: FastPath | undefined;
  #fullClaimAt = 0;
  #turn = 0;
  #idleTails: Map<string, string> | undefined;

  constructor(
    private readonly ctx: SourceContext,
    readonly pattern: string,
    readonly group: string,
    private readonly ackTimeoutMs: number,
    registry: GroupEntry,
  ) {
    this.wildcard = pattern.split('.').some((s) => s === '*' || s === '>');
    this.#registry = registry;
    if (!this.wildcard) this.#setTopics([pattern]);
  }

  /** Starts discovery and the doorbell for `sub`, which this source feeds. */
  start(sub: PollingSubscription): void {
    this.#sub = sub;
    if (this.wildcard) {
      void this.#discover();
      this.#discoveryTimer = setInterval(() => void this.#discover(), this.ctx.discoveryIntervalMs);
      this.#discoveryTimer.unref();
    }
    if (!this.ctx.clustered) this.#bellLoop = this.#ring();
  }

  /**
   * The group was declared afresh (an ephemeral group removed after it missed its renewals): it
   * starts over from the new declaration on every topic.
   */
  redeclared(entry: GroupEntry): void {
    this.#registry = entry;
    this.#setTopics([...this.#topics]);
  }

  /** A topic was published to for the first time (announced by a publisher). */
  topicAnnounced(topic: string): void {
    if (this.wildcard && !this.#since.has(topic) && topicMatches(this.pattern, topic)) {
      this.#setTopics([...this.#topics, topic]);
    }
  }

  /** Whether a local publish to `topic` concerns this subscription. */
  matches(topic: string): boolean {
    return this.#since.has(topic) || (this.wildcard && topicMatches(this.pattern, topic));
  }

  wake(): void {
    this.#sub?.wake();
  }

  async claim(max: number): Promise<ManagedDelivery[]> {
    if (this.#closed || this.ctx.closed || this.#topics.length === 0) return [];
    const now = this.ctx.clock.now();
    let minIdle = 0;
    if (now - this.#lastReclaimAt >= Math.max(50, this.ackTimeoutMs / 4)) {
      minIdle = Math.ceil(this.ackTimeoutMs);
      this.#lastReclaimAt = now;
    }
    // Settles waiting for the end of this turn go out now, in the same write as this claim.
    this.ctx.batcher.send();
    this.#partitions ??= this.#partition();
    // Topics may change while a claim is out: this claim keeps the list it started with.
    const partitions = this.#partitions;
    const fast = this.#fast;
    if (minIdle === 0 && fast && fast.partitions === partitions && now - this.#fullClaimAt < FAST_PATH_MS) {
      const got = await this.#fastClaim(fast, max);
      if (got.length > 0) return got;
    }
    this.#fast = undefined;
    const out: ManagedDelivery[] = [];
    let nextDueIn = -1;
    const turn = this.#turn++;
    for (let p = 0; p < partitions.length; p++) {
      // Partitions (cluster) and topics within one take turns going first, so none starves.
      const partition = partitions[(p + turn) % partitions.length] as Partition;
      const { topics, keys, since, cursors } = partition;
      const room = max - out.length;
      if (room <= 0) break;
      // One topic: should its messages all sit in one priority stream, it is read directly.
      const direct = partitions.length === 1 && topics.length === 1;
      let reply: Reply;
      try {
        reply = await this.ctx
          .client()
          .agentbusClaimBuffer(
            keys.length,
            ...keys,
            this.group,
            this.consumer,
            room,
            minIdle,
            MOVE_LIMIT,
            turn % topics.length,
            direct ? 1 : 0,
            ...since,
            ...cursors,
          );
      } catch (err) {
        throw toBusError(err, 'claim');
      }
      const [serverNow, nextDue, packed, tails, fastIndex, nextCursors] = reply as [
        number,
        number,
        Buffer,
        Reply[],
        number,
        Reply[],
      ];
      if (minIdle > 0) partition.cursors = nextCursors.map((c) => text(c));
      if (nextDue >= 0) {
        const inMs = Math.max(0, nextDue - serverNow);
        if (nextDueIn < 0 || inMs < nextDueIn) nextDueIn = inMs;
      }
      let o = 0;
      while (o < packed.length) {
        const [d, next] = await this.#delivery(topics, keys, packed, o);
        o = next;
        if (d) out.push(d);
      }
      if (direct && fastIndex > 0) {
        const fast: FastPath = {
          partitions,
          topic: topics[0] as string,
          key: keys[fastIndex - 1] as string,
          index: fastIndex - 1,
        };
        this.#fast = fast;
        // The script left this stream to us; its tails were taken before this read, so an
        // entry added after it still rings the doorbell.
        const read = max - out.length > 0 ? await this.#fastClaim(fast, max - out.length, false) : [];
        for (const d of read) out.push(d);
        if (out.length === 0) this.#idle(keys, tails);
      } else if (packed.length === 0 && partitions.length === 1) {
        this.#idle(keys, tails);
      }
    }
    this.#fullClaimAt = this.ctx.clock.now();
    if (nextDueIn >= 0) this.#wakeIn(nextDueIn);
    return out;
  }

  /**
   * The hot path of a single-topic subscription whose messages all use one priority, with no
   * retries or delayed entries waiting (as the last full claim found): a plain XREADGROUP on that
   * stream, no script. A full claim runs again at least every FAST_PATH_MS, when crashed consumers'
   * entries are due for reclaiming, and whenever this read finds nothing.
   */
  async #fastClaim(fast: FastPath, max: number, quiet = true): Promise<ManagedDelivery[]> {
    let res: [Buffer, [Buffer, Buffer[]][]][] | null;
    try {
      res = (await this.ctx
        .client()
        .xreadgroupBuffer('GROUP', this.group, this.consumer, 'COUNT', max, 'STREAMS', fast.key, '>')) as typeof res;
    } catch (err) {
      if (quiet) return []; // the full claim that follows reports what is wrong
      throw toBusError(err, 'claim');
    }
    const entries = res?.[0]?.[1] ?? [];
    const out: ManagedDelivery[] = [];
    for (const [id, fields] of entries) {
      const d = await this.#build(fast.topic, fast.key, fast.index, id.toString('latin1'), 1, fields);
      if (d) out.push(d);
    }
    return out;
  }

  /** The keys and start ids of each claim call: all topics at once, or one topic per call on a cluster. */
  #partition(): Partition[] {
    const groups = this.ctx.clustered ? this.#topics.map((t) => [t]) : [this.#topics];
    return groups.map((topics) => {
      const keys: string[] = [];
      const since: string[] = [];
      for (const t of topics) {
        keys.push(
          ...this.ctx.keys.streams(t),
          this.ctx.keys.retry(t, this.group),
          this.ctx.keys.delayed(t, this.group),
        );
        since.push(this.#since.get(t) ?? '0');
      }
      return { topics, keys, since, cursors: new Array<string>(topics.length * 11).fill('0-0') };
    });
  }

  release(d: ManagedDelivery, handedOut: boolean): Promise<void> {
    return (d.lease as RedisLease).release(handedOut);
  }

  onClose(): void {
    this.#closed = true;
    clearTimeout(this.#dueTimer);
    clearInterval(this.#discoveryTimer);
    this.#bell?.disconnect();
    this.#idleWaiter?.(new Map());
  }

  /** Waits for the doorbell loop to end (after close). */
  async stopped(): Promise<void> {
    await this.#bellLoop;
  }

  /** Reads one claimed entry (see the claim script's frame) at `o`; returns it and where the next starts. */
  async #delivery(
    topics: readonly string[],
    keys: readonly string[],
    buf: Buffer,
    start: number,
  ): Promise<[ManagedDelivery | undefined, number]> {
    let o = start;
    const idx = buf.readUInt32BE(o) - 1;
    const count = buf.readUInt32BE(o + 4);
    const idLength = buf.readUInt16BE(o + 8);
    o += 10;
    const entryId = buf.toString('latin1', o, o + idLength);
    o += idLength;
    const pairs = buf.readUInt16BE(o);
    o += 2;
    const fields: Buffer[] = new Array(pairs * 2);
    for (let k = 0; k < pairs; k++) {
      const nameLength = buf.readUInt16BE(o);
      fields[k * 2] = buf.subarray(o + 2, o + 2 + nameLength);
      o += 2 + nameLength;
      const valueLength = buf.readUInt32BE(o);
      fields[k * 2 + 1] = buf.subarray(o + 4, o + 4 + valueLength);
      o += 4 + valueLength;
    }
    const topic = topics[Math.floor(idx / KEYS_PER_TOPIC)] as string;
    return [await this.#build(topic, keys[idx] as string, idx % KEYS_PER_TOPIC, entryId, count, fields), o];
  }

  /**
   * A delivery from a stream entry: `slot` is the key's place among a topic's keys (priority 9
   * first, then the retry stream), `fields` the entry's field/value pairs.
   */
  async #build(
    topic: string,
    key: string,
    slot: number,
    entryId: string,
    count: number,
    fields: Buffer[],
  ): Promise<ManagedDelivery | undefined> {
    let id = '';
    let body: Buffer = EMPTY;
    let headers: Readonly<Record<string, string>> = EMPTY_HEADERS;
    let expiresAtMs: number | undefined;
    let priority = MAX_PRIORITY - slot;
    let publishedAtMs = Number(entryId.slice(0, entryId.indexOf('-')));
    let made = 0;
    let lastError: string | undefined;
    for (let k = 0; k + 1 < fields.length; k += 2) {
      const name = fields[k] as Buffer;
      const v = fields[k + 1] as Buffer;
      switch (name.length === 1 ? name[0] : 0) {
        case 0x69: // i
          id = v.toString('utf8');
          break;
        case 0x62: // b
          body = v;
          break;
        case 0x68: // h
          headers = parseHeaders(v.toString('utf8'));
          break;
        case 0x78: // x
          if (v.length > 0) expiresAtMs = Number(v.toString('latin1'));
          break;
        case 0x70: // p
          priority = Number(v.toString('latin1'));
          break;
        case 0x74: // t
          publishedAtMs = Number(v.toString('latin1'));
          break;
        case 0x61: // a
          made = Number(v.toString('latin1'));
          break;
        case 0x6c: // l
          // The error of the nack that made this entry: it precedes the entry's first delivery
          // only. A later delivery of the entry follows a lease that ran out, which left none.
          if (count === 1) lastError = v.toString('utf8');
          break;
      }
    }
    const attempt = made + count;
    const lease = new RedisLease(this.ctx, {
      topic,
      group: this.group,
      consumer: this.consumer,
      key,
      entryId,
      count,
      priority,
      publishedAtMs,
      attempt,
      lastError,
    });
    if (expiresAtMs !== undefined && expiresAtMs <= this.ctx.clock.now()) {
      // Should this fail, the entry stays leased to us and comes back expired after the lease.
      await lease.bury('expired', `expired at ${new Date(expiresAtMs).toISOString()}`, attempt - 1).catch(() => {});
      return undefined;
    }
    const message: InboundMessage = { id, topic, body, headers, priority, expiresAtMs, publishedAtMs };
    return new ManagedDelivery(message, this.group, attempt, lease, lastError);
  }

  #wakeIn(ms: number): void {
    clearTimeout(this.#dueTimer);
    this.#dueTimer = setTimeout(() => this.wake(), ms + 1);
    this.#dueTimer.unref();
  }

  #setTopics(topics: string[]): void {
    this.#topics = topics;
    const since = new Map<string, string>();
    for (const t of topics) {
      const ms = declaredFor(this.#registry, t);
      const margin = this.ctx.clustered ? CLUSTER_CLOCK_MARGIN_MS : 0;
      since.set(t, ms === undefined ? '$' : startId(ms - margin));
    }
    this.#since = since;
    this.#partitions = undefined;
    // The doorbell reads a fixed key list: interrupt it so it picks up the new streams.
    this.#topicsChanged = true;
    this.#idleTails = undefined;
    if (this.#bellId !== undefined) {
      this.ctx
        .client()
        .client('UNBLOCK', this.#bellId)
        .catch(() => {});
    }
    this.wake();
  }

  async #discover(): Promise<void> {
    if (this.#closed) return;
    try {
      const client = this.ctx.client();
      const [all, entry] = await Promise.all([
        client.smembers(this.ctx.keys.topics),
        client.hget(this.ctx.keys.groups, this.group),
      ]);
      this.#registry = parseGroupEntry(entry) ?? this.#registry;
      const found = all.filter((t) => !this.#since.has(t) && topicMatches(this.pattern, t));
      if (found.length > 0) this.#setTopics([...this.#topics, ...found]);
    } catch {
      // Redis unreachable: the next interval tries again; claims report the outage meanwhile.
    }
  }

  /**
   * The doorbell: while the subscription is idle, a blocking XREAD on its streams from the tails
   * the last (empty) claim saw atomically, so nothing added since is missed. Its return wakes the
   * subscription, which claims through the group; the next empty claim re-arms it.
   */
  async #ring(): Promise<void> {
    const bell = this.ctx.duplicate() as Redis;
    this.#bell = bell;
    bell.on('error', () => {});
    bell.on('ready', () => {
      bell
        .client('ID')
        .then((id) => {
          this.#bellId = id as number;
        })
        .catch(() => {});
    });
    let tails: Map<string, string> | undefined;
    while (!this.#closed) {
      tails ??= await this.#nextIdle();
      if (this.#closed) break;
      if (tails.size === 0) {
        tails = undefined;
        continue;
      }
      try {
        if (bell.status === 'wait') await bell.connect();
        const res = await bell.xreadBuffer(
          'COUNT',
          1,
          'BLOCK',
          this.ctx.blockMs,
          'STREAMS',
          ...tails.keys(),
          ...tails.values(),
        );
        if (res || this.#topicsChanged) {
          this.#topicsChanged = false;
          tails = undefined;
          this.wake();
        }
      } catch {
        if (this.#closed) break;
        tails = undefined;
        await new Promise((r) => setTimeout(r, BELL_RETRY_MS));
        this.wake();
      }
    }
  }

  /** Resolves with the stream tails of the next claim that finds nothing. */
  #nextIdle(): Promise<Map<string, string>> {
    const ready = this.#idleTails;
    if (ready) {
      this.#idleTails = undefined;
      return Promise.resolve(ready);
    }
    return new Promise((resolve) => {
      this.#idleWaiter = resolve;
    });
  }

  #idle(keys: readonly string[], tails: Reply[]): void {
    const map = new Map<string, string>();
    keys.forEach((k, i) => {
      const t = tails[i];
      const id = t === undefined || t === null ? '' : text(t);
      if (id !== '') map.set(k, id);
    });
    const w = this.#idleWaiter;
    this.#idleWaiter = undefined;
    // Kept when the doorbell is busy: an older starting point only costs one early wake-up.
    if (w) w(map);
    else this.#idleTails = map;
  }
}

/** Parsed header sets, shared (frozen): most messages of a topic carry the same few. */
const headerCache = new Map<string, Readonly<Record<string, string>>>();
const HEADER_CACHE_SIZE = 1_000;

function parseHeaders(json: string): Readonly<Record<string, string>> {
  const cached = headerCache.get(json);
  if (cached) return cached;
  let parsed: Readonly<Record<string, string>> = Object.freeze({});
  try {
    const v = JSON.parse(json) as unknown;
    if (v !== null && typeof v === 'object') parsed = Object.freeze(v as Record<string, string>);
  } catch {
    // A foreign or damaged entry: no headers.
  }
  if (headerCache.size >= HEADER_CACHE_SIZE) headerCache.clear();
  headerCache.set(json, parsed);
  return parsed;
}
