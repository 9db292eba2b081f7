import { createHash } from 'node:crypto';
import { assertTakeRequest, type RateLimiter, type TakeResult } from '@agentbus/core';
import type { Cluster, Redis } from 'ioredis';
import { toBusError } from './redis-errors.js';
import { storeClient } from './store-client.js';

export interface RedisRateLimiterOptions {
  /** `redis://…` (the limiter opens and closes its own connection), or a client you own. */
  readonly url?: string;
  readonly client?: Redis | Cluster;
  /** Prefix of its keys (default `agentbus:ratelimit`); a bucket is the hash `<prefix>:<key>`. */
  readonly keyPrefix?: string;
}

/** A Redis rate limiter with its close() (it quits the connection it opened). */
export interface RedisRateLimiter extends RateLimiter {
  close(): Promise<void>;
}

export const REDIS_RATE_LIMITER_DEFAULTS = Object.freeze({
  url: 'redis://127.0.0.1:6379',
  keyPrefix: 'agentbus:ratelimit',
});

/**
 * Refill and take in one step, on the server's clock (TIME), so that every process sees one
 * budget and client clocks do not matter. A bucket is a hash { t: tokens, at: ms of t }; it
 * expires once it would have refilled to full, since a missing bucket is a full one.
 * KEYS: the bucket. ARGV: cost, capacity, refill per second, reserved.
 * Returns { 1|0 allowed, tokens left, retry after ms } (fractions as strings: Lua numbers would be cut).
 */
export const TAKE_TOKENS = `
local cost, capacity, rate, reserved = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local b = redis.call('HMGET', KEYS[1], 't', 'at')
local tokens, at = tonumber(b[1]), tonumber(b[2])
if tokens == nil or at == nil then tokens = capacity; at = now end
if now > at then tokens = tokens + (now - at) * rate / 1000 end
if tokens > capacity then tokens = capacity end
local allowed, retry = 0, 0
if tokens + 1e-9 >= cost + reserved then
  allowed = 1
  tokens = math.max(0, tokens - cost)
else
  retry = math.max(1, math.ceil((cost + reserved - tokens) * 1000 / rate))
end
local full_in = math.ceil((capacity - tokens) * 1000 / rate)
if full_in < 1 then
  redis.call('DEL', KEYS[1])
else
  redis.call('HSET', KEYS[1], 't', string.format('%.17g', tokens), 'at', string.format('%.17g', math.max(now, at)))
  redis.call('PEXPIRE', KEYS[1], full_in)
end
return { allowed, string.format('%.17g', tokens), tostring(retry) }
`;

const TAKE_SHA = createHash('sha1').update(TAKE_TOKENS).digest('hex');

/**
 * A RateLimiter whose buckets live in Redis, shared by every process that uses the same
 * `keyPrefix`: one Lua script refills and takes atomically on the server's clock. Buckets expire
 * by themselves once full. A failing Redis rejects the take (a retryable ConnectionError for a
 * lost connection): callers fail closed.
 */
export function redisRateLimiter(options: RedisRateLimiterOptions = {}): RedisRateLimiter {
  const { client, prefix, close } = storeClient(
    { ...options, url: options.client ? options.url : (options.url ?? REDIS_RATE_LIMITER_DEFAULTS.url) },
    REDIS_RATE_LIMITER_DEFAULTS.keyPrefix,
  );
  const run = async (key: string, args: (string | number)[]): Promise<unknown> => {
    try {
      return await client.evalsha(TAKE_SHA, 1, key, ...args);
    } catch (err) {
      // First use on this server (or after SCRIPT FLUSH): send the script itself.
      if (!(err instanceof Error && err.message.startsWith('NOSCRIPT'))) throw err;
      return client.eval(TAKE_TOKENS, 1, key, ...args);
    }
  };
  return {
    async take(key, request): Promise<TakeResult> {
      assertTakeRequest(request);
      const { cost, capacity, refillPerSecond } = request;
      let reply: unknown;
      try {
        reply = await run(`${prefix}:${key}`, [cost, capacity, refillPerSecond, request.reserved ?? 0]);
      } catch (err) {
        throw toBusError(err, 'rate limit take');
      }
      const [allowed, remaining, retryAfterMs] = reply as [number, string, string];
      return { allowed: allowed === 1, retryAfterMs: Number(retryAfterMs), remaining: Number(remaining) };
    },
    close,
  };
}
