import { type Clock, type IdGenerator, systemClock, uuidv7Ids } from './clock.js';
import { assertPattern, assertTopic, MAX_PRIORITY, topicMatches } from './envelope.js';
import { ClosedError, ConfigError } from './errors.js';
import type { Fifo } from './fifo.js';
import { ManagedDelivery } from './managed-delivery.js';
import { type Entry, EntryLease, GroupQueue, type LeaseEnv } from './memory-group-queue.js';
import { PollingSubscription } from './polling-subscription.js';
import {
  type DeadLetter,
  type DeadLetterFilter,
  type DeadLetterStore,
  type GroupStats,
  type HealthReport,
  type InboundMessage,
  REPLAY_COUNT_HEADER,
  type Subscription,
  type Transport,
  type TransportCapabilities,
  type TransportMessage,
  type TransportSubscribeOptions,
} from './transport.js';

export interface MemoryTransportOptions {
  readonly clock?: Clock;
  readonly ids?: IdGenerator;
  /** Idle poll interval; local publishes wake consumers at once. */
  readonly pollIntervalMs?: number;
}

export const MEMORY_TRANSPORT_DEFAULTS = Object.freeze({ pollIntervalMs: 10 });

const ROUTE_CACHE_SIZE = 10_000;

const CAPABILITIES: TransportCapabilities = Object.freeze({
  persistent: false,
  crossProcess: false,
  priority: true,
  delayedDelivery: true,
  ttl: true,
  wildcards: true,
  deadLetterReplay: true,
});

/**
 * The in-process transport: the full delivery contract (groups, leases, priority, delays, TTL,
 * dead letters, ephemeral groups, routeCount, groupStats) without persistence. For tests, demos
 * and single-process agents.
 */
export class MemoryTransport implements Transport {
  readonly name = 'memory';
  readonly capabilities = CAPABILITIES;
  readonly deadLetters: DeadLetterStore;
  readonly #clock: Clock;
  readonly #ids: IdGenerator;
  readonly #pollIntervalMs: number;
  readonly #groups = new Map<string, GroupQueue>();
  readonly #routes = new Map<string, GroupQueue[]>();
  readonly #dead = new Map<string, DeadLetter>();
  #tokens = 0;
  readonly #leaseEnv: LeaseEnv = {
    clock: { now: () => this.#clock.now() },
    bury: (g, e, reason, error) => this.#bury(g, e, reason, error),
  };
  #closed = false;

  constructor(options: MemoryTransportOptions = {}) {
    this.#clock = options.clock ?? systemClock;
    this.#ids = options.ids ?? uuidv7Ids;
    this.#pollIntervalMs = options.pollIntervalMs ?? MEMORY_TRANSPORT_DEFAULTS.pollIntervalMs;
    if (!(this.#pollIntervalMs > 0)) throw new ConfigError('must be > 0', { path: 'pollIntervalMs' });
    this.deadLetters = this.#deadLetterStore();
  }

  async connect(): Promise<void> {
    this.#assertOpen();
  }

  async publish(batch: readonly TransportMessage[]): Promise<void> {
    this.#assertOpen();
    const now = this.#clock.now();
    const touched = new Set<GroupQueue>();
    for (const m of batch) {
      const message: InboundMessage = {
        id: m.id,
        topic: m.topic,
        body: m.body,
        headers: m.headers,
        priority: m.priority,
        expiresAtMs: m.expiresAtMs,
        publishedAtMs: now,
      };
      for (const group of this.#route(m.topic)) {
        group.enqueue({ message, attempt: 0, readyAtMs: now, leaseUntilMs: 0, token: 0, lastError: undefined });
        touched.add(group);
      }
    }
    for (const g of touched) g.wake();
  }

  /**
   * Declares the group for `pattern` and starts consuming. An ephemeral group (`ephemeral: true`)
   * has one subscription and is removed, with what it holds and its dead letters, when that
   * subscription closes; a group is either durable or ephemeral (ConfigError otherwise).
   */
  async subscribe(pattern: string, options: TransportSubscribeOptions): Promise<Subscription<ManagedDelivery>> {
    this.#assertOpen();
    assertPattern(pattern);
    const ephemeral = options.ephemeral === true;
    let group = this.#groups.get(options.group);
    if (group && group.ephemeral !== ephemeral) {
      throw new ConfigError(`group ${options.group} is ${group.ephemeral ? 'ephemeral' : 'durable'}`, {
        path: 'subscribe.ephemeral',
      });
    }
    if (group?.ephemeral) {
      throw new ConfigError(`ephemeral group ${options.group} already has a subscriber`, { path: 'subscribe.group' });
    }
    if (!group) {
      group = new GroupQueue(options.group, ephemeral);
      this.#groups.set(options.group, group);
    }
    if (!group.patterns.has(pattern)) {
      group.patterns.add(pattern);
      this.#routes.clear();
    }
    const g = group;
    const sub: PollingSubscription = new PollingSubscription(
      {
        claim: (max) => this.#claim(g, max, options.ackTimeoutMs),
        release: (d, handedOut) => this.#release(g, d, handedOut),
        onClose: () => {
          g.subscriptions.delete(sub);
          if (g.ephemeral) this.#removeGroup(g);
        },
      },
      { prefetch: options.prefetch, pollIntervalMs: this.#pollIntervalMs, leaseMs: options.ackTimeoutMs },
    );
    group.subscriptions.add(sub);
    return sub;
  }

  /** The groups a message published on `topic` now would reach. */
  async routeCount(topic: string): Promise<number> {
    this.#assertOpen();
    assertTopic(topic);
    return this.#route(topic).length;
  }

  /** Ready and delayed entries (backlog) and unsettled leases (inFlight) of `group`; zeros for an unknown group. */
  async groupStats(group: string): Promise<GroupStats> {
    this.#assertOpen();
    const g = this.#groups.get(group);
    if (!g) return { backlog: 0, inFlight: 0 };
    this.#expireLeases(g, this.#clock.now());
    return { backlog: g.backlog, inFlight: g.inflight };
  }

  async health(): Promise<HealthReport> {
    if (this.#closed) return { status: 'fail', transport: this.name, error: 'closed' };
    let backlog = 0;
    let inflight = 0;
    for (const g of this.#groups.values()) {
      backlog += g.backlog;
      inflight += g.inflight;
    }
    return {
      status: 'pass',
      transport: this.name,
      latencyMs: 0,
      details: { groups: this.#groups.size, backlog, inflight, deadLetters: this.#dead.size },
    };
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const subs = [...this.#groups.values()].flatMap((g) => [...g.subscriptions]);
    await Promise.all(subs.map((s) => s.close()));
  }

  #assertOpen(): void {
    if (this.#closed) throw new ClosedError('transport is closed');
  }

  #route(topic: string): GroupQueue[] {
    let groups = this.#routes.get(topic);
    if (!groups) {
      // Per-task or per-reply topics are unbounded in number: keep the cache bounded.
      if (this.#routes.size >= ROUTE_CACHE_SIZE) this.#routes.clear();
      groups = [...this.#groups.values()].filter((g) => [...g.patterns].some((p) => topicMatches(p, topic)));
      this.#routes.set(topic, groups);
    }
    return groups;
  }

  /** An ephemeral group goes with its subscription: its entries, its routes and its dead letters. */
  #removeGroup(g: GroupQueue): void {
    if (this.#groups.get(g.name) !== g) return;
    this.#groups.delete(g.name);
    this.#routes.clear();
    for (const [id, d] of this.#dead) if (d.group === g.name) this.#dead.delete(id);
  }

  /** Leases that ran out go back to the front of the ready queues. */
  #expireLeases(g: GroupQueue, now: number): void {
    for (let l = g.leases.peek(); l && l.untilMs <= now; l = g.leases.peek()) {
      g.leases.pop();
      const e = l.entry;
      if (e.token !== l.token) continue; // settled or released since
      if (e.leaseUntilMs > now) {
        g.leases.push({ entry: e, token: l.token, untilMs: e.leaseUntilMs }); // extended
        continue;
      }
      g.inflight--;
      e.token = 0;
      g.enqueue(e, true);
    }
  }

  #claim(g: GroupQueue, max: number, ackTimeoutMs: number): ManagedDelivery[] {
    const now = this.#clock.now();
    while ((g.delayed.peek()?.readyAtMs ?? Number.POSITIVE_INFINITY) <= now) g.enqueue(g.delayed.pop() as Entry);
    this.#expireLeases(g, now);
    const out: ManagedDelivery[] = [];
    for (let p = MAX_PRIORITY; p >= 0 && out.length < max; p--) {
      const q = g.ready[p] as Fifo<Entry>;
      while (out.length < max) {
        const e = q.shift();
        if (!e) break;
        if (e.message.expiresAtMs !== undefined && e.message.expiresAtMs <= now) {
          this.#bury(g, e, 'expired', `expired at ${new Date(e.message.expiresAtMs).toISOString()}`);
          continue;
        }
        e.attempt++;
        e.token = ++this.#tokens;
        e.leaseUntilMs = now + ackTimeoutMs;
        g.inflight++;
        g.leases.push({ entry: e, token: e.token, untilMs: e.leaseUntilMs });
        if (g.leases.size > 2 * g.inflight + 1024) g.compactLeases();
        out.push(this.#delivery(g, e));
        e.lastError = undefined;
      }
    }
    return out;
  }

  #delivery(g: GroupQueue, e: Entry): ManagedDelivery {
    return new ManagedDelivery(e.message, g.name, e.attempt, new EntryLease(this.#leaseEnv, g, e), e.lastError);
  }

  #release(g: GroupQueue, d: ManagedDelivery, handedOut: boolean): void {
    const e = d.lease instanceof EntryLease ? d.lease.e : undefined;
    if (!e || e.token === 0 || e.token !== (d.lease as EntryLease).token) return;
    g.inflight--;
    e.token = 0;
    // Never seen by the consumer: its next delivery is the same attempt, with the same last error.
    if (!handedOut) {
      e.attempt--;
      e.lastError = d.lastError;
    }
    g.enqueue(e, true);
    g.wake();
  }

  #bury(g: GroupQueue, e: Entry, reason: string, error: string | undefined): void {
    // An ephemeral group that is gone keeps no dead letters.
    if (this.#groups.get(g.name) !== g) return;
    const id = this.#ids();
    this.#dead.set(id, {
      id,
      group: g.name,
      reason,
      error,
      attempts: e.attempt,
      deadLetteredAtMs: this.#clock.now(),
      message: e.message,
    });
  }

  #deadLetterStore(): DeadLetterStore {
    const matching = (filter: DeadLetterFilter = {}): DeadLetter[] => {
      const out: DeadLetter[] = [];
      for (const d of this.#dead.values()) {
        if (filter.group !== undefined && d.group !== filter.group) continue;
        if (filter.reason !== undefined && d.reason !== filter.reason) continue;
        if (filter.topic !== undefined && !topicMatches(filter.topic, d.message.topic)) continue;
        if (filter.sinceMs !== undefined && d.deadLetteredAtMs < filter.sinceMs) continue;
        if (filter.untilMs !== undefined && d.deadLetteredAtMs >= filter.untilMs) continue;
        out.push(d);
      }
      return out;
    };
    const select = (target: string | DeadLetterFilter | undefined, limit?: number): DeadLetter[] => {
      if (typeof target === 'string') {
        const d = this.#dead.get(target);
        return d ? [d] : [];
      }
      const all = matching(target);
      return limit === undefined ? all : all.slice(0, limit);
    };
    return {
      list: async (filter = {}) => select(filter, filter.limit ?? 100),
      get: async (id) => this.#dead.get(id),
      replay: async (target) => {
        this.#assertOpen();
        const chosen = select(target, typeof target === 'string' ? undefined : target.limit);
        for (const d of chosen) {
          this.#dead.delete(d.id);
          const g = this.#groups.get(d.group);
          if (!g) continue;
          const replays = Number(d.message.headers[REPLAY_COUNT_HEADER] ?? '0') + 1;
          const message: InboundMessage = {
            ...d.message,
            headers: { ...d.message.headers, [REPLAY_COUNT_HEADER]: String(replays) },
            expiresAtMs: d.reason === 'expired' ? undefined : d.message.expiresAtMs,
          };
          g.enqueue({
            message,
            attempt: 0,
            readyAtMs: this.#clock.now(),
            leaseUntilMs: 0,
            token: 0,
            lastError: undefined,
          });
          g.wake();
        }
        return chosen.length;
      },
      purge: async (target) => {
        const chosen = select(target ?? {}, typeof target === 'object' ? target.limit : undefined);
        for (const d of chosen) this.#dead.delete(d.id);
        return chosen.length;
      },
    };
  }
}

/** Creates the in-memory transport. */
export function memoryTransport(options: MemoryTransportOptions = {}): MemoryTransport {
  return new MemoryTransport(options);
}
