import { randomBytes } from 'node:crypto';
import {
  assertSubscribeOptions,
  assertTransportBatch,
  type Clock,
  ClosedError,
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
import { parseGroupEntry } from './group-registry.js';
import { RedisKeys } from './keys.js';
import { type RedisTransportOptions, type ResolvedRedisOptions, resolveRedisOptions } from './options.js';
import { RedisClaimSource, type SourceContext } from './redis-claim-source.js';
import { RedisDeadLetterStore } from './redis-dead-letter-store.js';
import { toBusError } from './redis-errors.js';
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
 * Packs a batch for the publish script: its distinct stream keys, and per message the index of
 * its key, id, headers, expiry and body, length-prefixed, in one buffer (one argument instead of
 * four per message).
 */
function packBatch(msgs: readonly TransportMessage[], names: RedisKeys): { keys: string[]; packed: Buffer } {
  const n = msgs.length;
  const keys: string[] = [];
  const index = new Map<string, number>();
  const keyOf: number[] = new Array(n);
  const headers: string[] = new Array(n);
  const expiries: string[] = new Array(n);
  let total = 0;
  for (let i = 0; i < n; i++) {
    const m = msgs[i] as TransportMessage;
    const key = names.stream(m.topic, m.priority);
    let k = index.get(key);
    if (k === undefined) {
      k = keys.push(key);
      index.set(key, k);
    }
    keyOf[i] = k;
    const h = JSON.stringify(m.headers);
    const x = m.expiresAtMs === undefined ? '' : String(m.expiresAtMs);
    headers[i] = h;
    expiries[i] = x;
    total += 14 + Buffer.byteLength(m.id, 'utf8') + Buffer.byteLength(h, 'utf8') + x.length + m.body.byteLength;
  }
  // One allocation for the batch; every message is written into it in place.
  const packed = Buffer.allocUnsafe(total);
  let o = 0;
  for (let i = 0; i < n; i++) {
    const m = msgs[i] as TransportMessage;
    o = packed.writeUInt16BE(keyOf[i] as number, o);
    const idLength = packed.write(m.id, o + 2, 'utf8');
    o = packed.writeUInt16BE(idLength, o) + idLength;
    const headersLength = packed.write(headers[i] as string, o + 4, 'utf8');
    o = packed.writeUInt32BE(headersLength, o) + headersLength;
    const x = expiries[i] as string;
    o = packed.writeUInt16BE(x.length, o);
    o += packed.write(x, o, 'latin1');
    o = packed.writeUInt32BE(m.body.byteLength, o);
    packed.set(m.body, o);
    o += m.body.byteLength;
  }
  return { keys, packed };
}

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
  readonly #subscriptions = new Set<PollingSubscription>();
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
    this.#retention = new RetentionPass(() => this.#connect(), this.keys, this.#options.retention.maxAgeMs);
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

  async subscribe(pattern: string, options: TransportSubscribeOptions): Promise<Subscription<ManagedDelivery>> {
    this.#assertOpen();
    assertSubscribeOptions(pattern, options);
    const c = await this.#connect();
    let entryJson: string;
    try {
      entryJson = await c.agentbusDeclare(1, this.keys.groups, options.group, pattern);
    } catch (err) {
      throw toBusError(err, 'subscribe');
    }
    this.#assertOpen();
    const entry = parseGroupEntry(entryJson) ?? { patterns: {} };
    const source = new RedisClaimSource(this.#sourceContext(), pattern, options.group, options.ackTimeoutMs, entry);
    const sub: PollingSubscription = new PollingSubscription(
      {
        claim: (max) => source.claim(max),
        release: (d, handedOut) => source.release(d, handedOut),
        onClose: () => {
          source.onClose();
          this.#sources.delete(source);
          this.#subscriptions.delete(sub);
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
      for (const s of this.#sources) c.agentbusDeclare(1, this.keys.groups, s.group, s.pattern).catch(() => {});
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
