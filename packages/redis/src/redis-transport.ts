import { randomBytes } from 'node:crypto';
import {
  assertSubscribeOptions,
  assertTopic,
  assertTransportBatch,
  type Clock,
  ClosedError,
  type GroupStats,
  type HealthReport,
  type ManagedDelivery,
  PollingSubscription,
  type Subscription,
  type Transport,
  type TransportCapabilities,
  type TransportMessage,
  type TransportSubscribeOptions,
} from '@agentbus/core';
import type { Cluster, Redis } from 'ioredis';
import { type Client, consumerClient, createClient, duplicateClient, isCluster, withScripts } from './connection.js';
import type { GroupEntry } from './group-registry.js';
import { RedisKeys } from './keys.js';
import { type RedisTransportOptions, type ResolvedRedisOptions, resolveRedisOptions } from './options.js';
import { packBatch } from './pack-batch.js';
import { RedisClaimSource, type SourceContext } from './redis-claim-source.js';
import { RedisDeadLetterStore } from './redis-dead-letter-store.js';
import { toBusError } from './redis-errors.js';
import { RedisGroups } from './redis-groups.js';
import { RetentionPass } from './retention.js';
import { SettleBatcher } from './settle-batcher.js';

const CAPABILITIES: TransportCapabilities = Object.freeze({
  persistent: true,
  crossProcess: true,
  priority: true,
  delayedDelivery: true,
  ttl: true,
  wildcards: true,
  deadLetterReplay: true,
});

/**
 * Redis Streams: one stream per topic and priority, one consumer group per subscriber group,
 * leases as pending entries (owner + delivery count), delayed redelivery through a sorted set and
 * a per-group retry stream, dead letters in a stream per topic and group. See the README's
 * Redis section for the key layout and what Redis persistence guarantees.
 */
export class RedisTransport implements Transport {
  readonly name = 'redis';
  readonly capabilities = CAPABILITIES;
  readonly deadLetters: RedisDeadLetterStore;
  readonly keys: RedisKeys;
  readonly #options: ResolvedRedisOptions;
  readonly #owned: boolean;
  readonly #batcher: SettleBatcher;
  readonly #sources = new Set<RedisClaimSource>();
  /** The sources of ephemeral subscriptions (renewed, and removed with their group on close). */
  readonly #ephemeral = new Set<RedisClaimSource>();
  readonly #subscriptions = new Set<PollingSubscription>();
  readonly #groups: RedisGroups;
  readonly #retention: RetentionPass;
  #client: Client | undefined;
  #consumer: Client | undefined;
  #connecting: Promise<Client> | undefined;
  #announcements: Redis | Cluster | undefined;
  #trimTimer: NodeJS.Timeout | undefined;
  #closing: Promise<void> | undefined;

  constructor(options: RedisTransportOptions = {}) {
    this.#options = resolveRedisOptions(options);
    this.keys = new RedisKeys(this.#options.keyPrefix);
    this.#owned = this.#options.client === undefined;
    this.#batcher = new SettleBatcher(() => this.#consumerReady());
    this.deadLetters = new RedisDeadLetterStore(() => this.#connect(), this.keys);
    // Also while closing: subscriptions closing then remove their ephemeral groups.
    this.#groups = new RedisGroups(() => (this.#client ? Promise.resolve(this.#client) : this.#connect()), this.keys);
    this.#retention = new RetentionPass(
      () => this.#connect(),
      this.keys,
      this.#options.retention.maxAgeMs,
      this.#groups,
    );
  }

  get closed(): boolean {
    return this.#closing !== undefined;
  }

  async connect(): Promise<void> {
    await this.#connect();
  }

  async publish(batch: readonly TransportMessage[]): Promise<void> {
    assertTransportBatch(batch);
    const c = await this.#connect();
    // Every batch registers its topics again (cheap, same write): a registry entry lost with a
    // Redis restart or failover comes back with the next publish.
    const topics = [...new Set(batch.map((m) => m.topic))];
    // One script per batch (per topic on a cluster, where a script stays in one slot): the batch
    // is stored whole or not at all, and the client builds one command instead of one per message.
    const groups = new Map<string, TransportMessage[]>();
    for (const m of batch) {
      const slot = isCluster(c) ? m.topic : '';
      const list = groups.get(slot);
      if (list) list.push(m);
      else groups.set(slot, [m]);
    }
    let added: number[];
    try {
      added = await Promise.all([
        ...topics.map((t) => c.sadd(this.keys.topics, t)),
        ...[...groups.values()].map((msgs) => {
          const { keys, packed } = packBatch(msgs, this.keys);
          return c.agentbusPublish(keys.length, ...keys, packed);
        }),
      ]);
    } catch (err) {
      throw toBusError(err, 'publish');
    }
    topics.forEach((t, i) => {
      // The first publish to a topic tells pattern subscribers elsewhere at once.
      if (added[i] === 1) c.publish(this.keys.topicChannel, t).catch(() => {});
    });
    for (const s of this.#sources) {
      if (batch.some((m) => s.matches(m.topic))) s.wake();
    }
    for (const t of topics) for (const s of this.#sources) s.topicAnnounced(t);
  }

  /**
   * Declares the group in the registry and starts consuming. With `ephemeral`, the group is this
   * subscription's alone: it renews the group every third of `ephemeralTtlMs`, and on close
   * removes it with all it holds (see RedisGroups); should the process die, the next retention
   * pass after `ephemeralTtlMs` does. A group is either durable or ephemeral, and an ephemeral one
   * has one subscriber: otherwise ConfigError.
   */
  async subscribe(pattern: string, options: TransportSubscribeOptions): Promise<Subscription<ManagedDelivery>> {
    this.#assertOpen();
    assertSubscribeOptions(pattern, options);
    await this.#connect();
    const { group } = options;
    const ephemeral = options.ephemeral === true;
    const ttlMs = this.#options.ephemeralTtlMs;
    let entry: GroupEntry;
    try {
      entry = await this.#groups.declare(group, pattern, ephemeral ? ttlMs : 0);
    } catch (err) {
      throw toBusError(err, 'subscribe');
    }
    if (this.closed && ephemeral) await this.#groups.remove(group).catch(() => {});
    this.#assertOpen();
    const source = new RedisClaimSource(this.#sourceContext(), pattern, group, options.ackTimeoutMs, entry);
    let renewer: NodeJS.Timeout | undefined;
    if (ephemeral) {
      this.#ephemeral.add(source);
      renewer = setInterval(() => this.#renew(source), Math.max(1, Math.floor(ttlMs / 3)));
      renewer.unref();
    }
    const sub: PollingSubscription = new PollingSubscription(
      {
        claim: (max) => source.claim(max),
        release: (d, handedOut) => source.release(d, handedOut),
        onClose: async () => {
          source.onClose();
          this.#sources.delete(source);
          this.#subscriptions.delete(sub);
          if (!renewer) return;
          clearInterval(renewer);
          this.#ephemeral.delete(source);
          // Not removed (Redis unreachable): the retention pass does once ephemeralTtlMs passed.
          await this.#groups.remove(group).catch(() => {});
        },
      },
      { prefetch: options.prefetch, pollIntervalMs: this.#options.pollIntervalMs, leaseMs: options.ackTimeoutMs },
    );
    this.#sources.add(source);
    this.#subscriptions.add(sub);
    if (source.wildcard) await this.#listenForTopics();
    source.start(sub);
    return sub;
  }

  /** Renews an ephemeral subscription's group; one removed meanwhile (a stall) starts over from now. */
  #renew(source: RedisClaimSource): void {
    this.#groups.renew(source.group, source.pattern, this.#options.ephemeralTtlMs).then(
      (fresh) => {
        if (fresh && this.#ephemeral.has(source)) source.redeclared(fresh);
      },
      () => {}, // the next renewal tries again
    );
  }

  /** The groups a message published on `topic` now would reach (an ephemeral group past its deadline does not count). */
  async routeCount(topic: string): Promise<number> {
    this.#assertOpen();
    assertTopic(topic);
    try {
      return await this.#groups.routeCount(topic);
    } catch (err) {
      throw toBusError(err, 'routeCount');
    }
  }

  /**
   * Backlog (undelivered entries on the topics the group's patterns match, its retries and its
   * delayed set) and inFlight (its pending entries); see RedisGroups.stats for the cost. Zeros
   * for an unknown group.
   */
  async groupStats(group: string): Promise<GroupStats> {
    this.#assertOpen();
    try {
      return await this.#groups.stats(group);
    } catch (err) {
      throw toBusError(err, 'groupStats');
    }
  }

  /** Runs one retention pass now (normally a timer does, one process at a time); resolves with entries trimmed. */
  async trim(): Promise<number> {
    this.#assertOpen();
    try {
      return await this.#retention.run();
    } catch (err) {
      throw toBusError(err, 'trim');
    }
  }

  async health(deep = false): Promise<HealthReport> {
    if (this.closed) return { status: 'fail', transport: this.name, error: 'closed' };
    const started = performance.now();
    try {
      const c = await this.#connect();
      await c.ping();
      if (deep) {
        const key = this.keys.health(randomBytes(6).toString('hex'));
        const value = String(Date.now());
        await c.set(key, value, 'PX', 10_000);
        const back = await c.get(key);
        await c.del(key);
        if (back !== value) throw new Error('health write/read round trip returned a different value');
      }
      return {
        status: 'pass',
        transport: this.name,
        latencyMs: performance.now() - started,
        details: { status: c.status, subscriptions: this.#subscriptions.size, keyPrefix: this.keys.prefix },
      };
    } catch (err) {
      return { status: 'fail', transport: this.name, error: toBusError(err, 'health').message };
    }
  }

  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    clearInterval(this.#trimTimer);
    const sources = [...this.#sources];
    // A subscription whose releases failed (Redis down) still closes; its leases run out instead.
    await Promise.allSettled([...this.#subscriptions].map((s) => s.close()));
    await Promise.all(sources.map((s) => s.stopped()));
    // Pending acks reach the server before the connection goes.
    await this.#batcher.flush();
    const client = this.#client ?? (await this.#connecting?.catch(() => undefined));
    this.#announcements?.disconnect();
    if (this.#consumer) await this.#consumer.quit().catch(() => this.#consumer?.disconnect());
    if (client && this.#owned) {
      // Let pending settles reach the server before the connection goes.
      await client.quit().catch(() => client.disconnect());
    }
  }

  #assertOpen(): void {
    if (this.#closing) throw new ClosedError('transport is closed');
  }

  #ready(): Client {
    if (!this.#client) throw new ClosedError('transport is not connected');
    return this.#client;
  }

  /** The consumers' connection (claims, acks, lease renewals), opened on first use. */
  #consumerReady(): Client {
    if (!this.#consumer) {
      const c = consumerClient(this.#ready(), this.#options);
      c.on('error', () => {});
      this.#consumer = c;
    }
    return this.#consumer;
  }

  #connect(): Promise<Client> {
    if (this.#closing) return Promise.reject(new ClosedError('transport is closed'));
    if (this.#client) return Promise.resolve(this.#client);
    this.#connecting ??= this.#open().then(
      (c) => {
        this.#client = c;
        return c;
      },
      (err: unknown) => {
        this.#connecting = undefined;
        throw err;
      },
    );
    return this.#connecting;
  }

  async #open(): Promise<Client> {
    const o = this.#options;
    const c = o.client ? withScripts(o.client) : createClient(o);
    // After a reconnect, declare the live groups again: a registry entry lost with a Redis
    // restart would otherwise stop retention from counting them.
    let connected = c.status === 'ready';
    c.on('ready', () => {
      if (!connected) {
        connected = true;
        return;
      }
      for (const s of this.#sources) {
        if (this.#ephemeral.has(s)) this.#renew(s);
        else c.agentbusDeclare(1, this.keys.groups, s.group, s.pattern, 0).catch(() => {});
      }
    });
    if (this.#owned) {
      c.on('error', () => {}); // reconnects by itself; failed commands reject with ConnectionError
      try {
        await c.connect();
      } catch (err) {
        c.disconnect();
        throw toBusError(err, `connect to ${o.url}`);
      }
    }
    if (o.trimIntervalMs > 0) {
      this.#trimTimer = setInterval(() => {
        this.#retention.runLocked(o.trimIntervalMs).catch(() => {});
      }, o.trimIntervalMs);
      this.#trimTimer.unref();
    }
    return c;
  }

  /** One pub/sub connection per transport hears about new topics for every pattern subscription. */
  async #listenForTopics(): Promise<void> {
    if (this.#announcements) return;
    const sub = duplicateClient(this.#ready(), this.#options);
    this.#announcements = sub;
    sub.on('error', () => {});
    sub.on('message', (_channel: string, topic: string) => {
      for (const s of this.#sources) s.topicAnnounced(topic);
    });
    try {
      await sub.subscribe(this.keys.topicChannel);
    } catch {
      // Discovery by polling still finds new topics.
    }
  }

  #sourceContext(): SourceContext {
    const transport = this;
    const o = this.#options;
    return {
      keys: this.keys,
      batcher: this.#batcher,
      clock: o.clock as Clock,
      clustered: isCluster(this.#ready()),
      get closed() {
        return transport.closed;
      },
      pollIntervalMs: o.pollIntervalMs,
      blockMs: o.blockMs,
      discoveryIntervalMs: o.discoveryIntervalMs,
      client: () => this.#consumerReady(),
      duplicate: () => duplicateClient(this.#ready(), o),
      registerDeadLetters: async (key) => {
        await this.#consumerReady().sadd(this.keys.deadLetters, key);
      },
    };
  }
}

/** Creates the Redis Streams transport (connects lazily or on `connect()`). */
export function redisTransport(options: RedisTransportOptions = {}): RedisTransport {
  return new RedisTransport(options);
}
