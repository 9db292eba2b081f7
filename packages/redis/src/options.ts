import { type Clock, ConfigError, nonNegativeNumber, positiveNumber, systemClock } from '@agentbus/core';
import type { Cluster, Redis, RedisOptions } from 'ioredis';

export interface RedisRetentionOptions {
  /**
   * Keep entries every group has acknowledged for this long (by stream id time) before trimming.
   * `0` (default): trim them at the next retention pass. Entries some group still needs are
   * never trimmed.
   */
  readonly maxAgeMs?: number;
}

export interface RedisTransportOptions {
  /** `redis://[user:pass@]host:port[/db]` or `rediss://…` (TLS). Default `redis://127.0.0.1:6379`. */
  readonly url?: string;
  /**
   * A client to use instead of `url` (a `Redis` for standalone or Sentinel, a `Cluster`). The
   * transport duplicates it for blocking reads and never closes the one given.
   */
  readonly client?: Redis | Cluster;
  /** Extra ioredis options for connections the transport creates from `url`. */
  readonly redisOptions?: RedisOptions;
  /** Prefix of every key (no braces). Default `agentbus`. */
  readonly keyPrefix?: string;
  readonly clock?: Clock;
  /**
   * How long an idle subscription waits before looking again without a wake-up. New entries wake
   * it at once through a blocking read; this bounds the delay of anything that is missed.
   */
  readonly pollIntervalMs?: number;
  /** How long a blocking read waits before it is renewed. */
  readonly blockMs?: number;
  /** How often a pattern subscription looks for new topics (announced ones are seen at once). */
  readonly discoveryIntervalMs?: number;
  /**
   * How often the retention pass runs (one process at a time); it also removes the ephemeral
   * groups whose process died. `0` disables it (call `trim()` yourself).
   */
  readonly trimIntervalMs?: number;
  /**
   * An ephemeral subscription renews its group every third of this (server time; 30 s by
   * default). A group not renewed for this long no longer counts for routeCount, and the next
   * retention pass of any process of the same prefix removes it: a crashed process's ephemeral
   * group is gone after at most `ephemeralTtlMs` + `trimIntervalMs`, while some process runs.
   */
  readonly ephemeralTtlMs?: number;
  readonly retention?: RedisRetentionOptions;
  /** Reconnect backoff: first delay and cap (ms); the delay doubles with jitter. */
  readonly reconnect?: { readonly initialMs?: number; readonly maxMs?: number };
}

/** Defaults of {@link RedisTransportOptions}. */
export const REDIS_TRANSPORT_DEFAULTS = Object.freeze({
  url: 'redis://127.0.0.1:6379',
  keyPrefix: 'agentbus',
  pollIntervalMs: 1_000,
  blockMs: 5_000,
  discoveryIntervalMs: 2_000,
  trimIntervalMs: 5_000,
  ephemeralTtlMs: 30_000,
  retention: Object.freeze({ maxAgeMs: 0 }),
  reconnect: Object.freeze({ initialMs: 50, maxMs: 5_000 }),
});

export interface ResolvedRedisOptions {
  readonly url: string;
  readonly client: Redis | Cluster | undefined;
  readonly redisOptions: RedisOptions;
  readonly keyPrefix: string;
  readonly clock: Clock;
  readonly pollIntervalMs: number;
  readonly blockMs: number;
  readonly discoveryIntervalMs: number;
  readonly trimIntervalMs: number;
  readonly ephemeralTtlMs: number;
  readonly retention: Required<RedisRetentionOptions>;
  readonly reconnect: { readonly initialMs: number; readonly maxMs: number };
}

const KNOWN = new Set([
  'url',
  'client',
  'redisOptions',
  'keyPrefix',
  'clock',
  'pollIntervalMs',
  'blockMs',
  'discoveryIntervalMs',
  'trimIntervalMs',
  'ephemeralTtlMs',
  'retention',
  'reconnect',
]);

/** Validates once and fills in defaults; throws ConfigError naming the field. */
export function resolveRedisOptions(options: RedisTransportOptions = {}): ResolvedRedisOptions {
  if (options === null || typeof options !== 'object') throw new ConfigError('an options object is required');
  for (const key of Object.keys(options)) {
    if (!KNOWN.has(key)) throw new ConfigError('unknown option', { path: key });
  }
  const d = REDIS_TRANSPORT_DEFAULTS;
  const url = options.url ?? d.url;
  if (typeof url !== 'string' || !/^rediss?:\/\//.test(url)) {
    throw new ConfigError(`must be a redis:// or rediss:// URL, got ${JSON.stringify(url)}`, { path: 'url' });
  }
  const clock = options.clock ?? systemClock;
  if (typeof clock?.now !== 'function') throw new ConfigError('must have a now() method', { path: 'clock' });
  const maxAgeMs = nonNegativeNumber(options.retention?.maxAgeMs ?? d.retention.maxAgeMs, 'retention.maxAgeMs');
  const reconnect = {
    initialMs: positiveNumber(options.reconnect?.initialMs ?? d.reconnect.initialMs, 'reconnect.initialMs'),
    maxMs: positiveNumber(options.reconnect?.maxMs ?? d.reconnect.maxMs, 'reconnect.maxMs'),
  };
  return {
    url,
    client: options.client,
    redisOptions: options.redisOptions ?? {},
    keyPrefix: options.keyPrefix ?? d.keyPrefix,
    clock,
    pollIntervalMs: positiveNumber(options.pollIntervalMs ?? d.pollIntervalMs, 'pollIntervalMs'),
    blockMs: positiveNumber(options.blockMs ?? d.blockMs, 'blockMs'),
    discoveryIntervalMs: positiveNumber(options.discoveryIntervalMs ?? d.discoveryIntervalMs, 'discoveryIntervalMs'),
    trimIntervalMs: nonNegativeNumber(options.trimIntervalMs ?? d.trimIntervalMs, 'trimIntervalMs'),
    ephemeralTtlMs: positiveNumber(options.ephemeralTtlMs ?? d.ephemeralTtlMs, 'ephemeralTtlMs'),
    retention: { maxAgeMs },
    reconnect,
  };
}
