import { type Clock, systemClock } from './clock.js';
import { ConfigError, ValidationError } from './errors.js';
import { positiveInteger, positiveNumber } from './validate.js';

/** One take from a bucket: what it costs and the bucket's shape. */
export interface TakeRequest {
  /** Tokens to take (>= 0; e.g. the LLM tokens a message will spend). */
  readonly cost: number;
  /** Most tokens the bucket holds: the largest burst. A missing bucket is full. */
  readonly capacity: number;
  /** Tokens added per second, continuously, up to `capacity`. */
  readonly refillPerSecond: number;
  /**
   * Tokens this take must leave in the bucket (default 0): the share reserved for callers of a
   * higher priority, which they take with a lower `reserved`. Must be below `capacity`.
   */
  readonly reserved?: number;
}

/** The outcome of a take. */
export interface TakeResult {
  /** Whether the tokens were taken; when not, nothing was taken. */
  readonly allowed: boolean;
  /** 0 when allowed; else how long until this take could succeed if nobody else takes meanwhile (ms, >= 1). */
  readonly retryAfterMs: number;
  /** Tokens left in the bucket after this take (may be fractional). */
  readonly remaining: number;
}

/**
 * A keyed set of token buckets, so that where the budget lives is pluggable: in this process
 * ({@link memoryRateLimiter}) or shared by every process (`redisRateLimiter` in `@agentbus/redis`).
 * The bucket's shape comes with each take, so one store serves limits of different sizes (and a
 * rate that changes, as in adaptive mode). A take is atomic: refill, check, take.
 */
export interface RateLimiter {
  /**
   * Refills `key`'s bucket for the time passed and takes `request.cost` tokens if that leaves at
   * least `request.reserved`. Throws ValidationError for a cost that no bucket of this shape could
   * ever grant (negative, not finite, or above `capacity - reserved`).
   */
  take(key: string, request: TakeRequest): Promise<TakeResult>;
}

/** Allowance for floating-point refill arithmetic (1e-9 tokens). */
const EPSILON = 1e-9;

/**
 * Throws for a take no bucket can grant: a bad shape (ConfigError naming the field) or a cost
 * that is negative, not finite or above `capacity - reserved` (ValidationError: the caller's fault,
 * and trying again will not help). Shared by every RateLimiter so they all refuse the same takes.
 */
export function assertTakeRequest(request: TakeRequest): void {
  const capacity = positiveNumber(request?.capacity, 'capacity');
  positiveNumber(request.refillPerSecond, 'refillPerSecond');
  const reserved = request.reserved ?? 0;
  if (typeof reserved !== 'number' || !(reserved >= 0 && reserved < capacity)) {
    throw new ConfigError(`must be a number in [0, capacity ${capacity}), got ${String(reserved)}`, {
      path: 'reserved',
    });
  }
  const { cost } = request;
  if (typeof cost !== 'number' || !Number.isFinite(cost) || cost < 0) {
    throw new ValidationError(`a cost must be a finite number >= 0, got ${String(cost)}`, { data: { cost } });
  }
  if (cost > capacity - reserved + EPSILON) {
    throw new ValidationError(
      reserved > 0
        ? `cost ${cost} can never be taken: the bucket holds ${capacity} tokens and ${reserved} of them are reserved for higher priorities`
        : `cost ${cost} can never be taken: the bucket holds at most ${capacity} tokens`,
      { data: { cost, capacity, reserved } },
    );
  }
}

/** The mutable state of one bucket. */
export interface BucketState {
  tokens: number;
  /** When `tokens` was last brought up to date (epoch ms). */
  atMs: number;
}

/**
 * The token-bucket step every in-process limiter uses: refill `state` up to `nowMs`, then take
 * (or not). Mutates `state`; the request must have passed {@link assertTakeRequest}.
 */
export function takeTokens(state: BucketState, nowMs: number, request: TakeRequest): TakeResult {
  const { cost, capacity, refillPerSecond } = request;
  const reserved = request.reserved ?? 0;
  // A clock that went back refills nothing (and does not owe tokens either).
  const elapsedMs = Math.max(0, nowMs - state.atMs);
  state.tokens = Math.min(capacity, state.tokens + (elapsedMs * refillPerSecond) / 1000);
  state.atMs = nowMs;
  if (state.tokens + EPSILON >= cost + reserved) {
    state.tokens = Math.max(0, state.tokens - cost);
    return { allowed: true, retryAfterMs: 0, remaining: state.tokens };
  }
  const retryAfterMs = Math.max(1, Math.ceil(((cost + reserved - state.tokens) * 1000) / refillPerSecond));
  return { allowed: false, retryAfterMs, remaining: state.tokens };
}

export interface TokenBucketOptions {
  /** Most tokens the bucket holds (the largest burst); it starts full. */
  readonly capacity: number;
  /** Tokens added per second, continuously. */
  readonly refillPerSecond: number;
  readonly clock?: Clock;
}

/**
 * One token bucket in this process: it holds up to `capacity` tokens, starts full and refills at
 * `refillPerSecond`; a take of `cost` tokens succeeds if the bucket has them. Synchronous; for a
 * budget keyed by agent, tenant … or shared by processes, use a {@link RateLimiter}.
 */
export class TokenBucket {
  readonly capacity: number;
  #refillPerSecond: number;
  readonly #clock: Clock;
  readonly #state: BucketState;

  constructor(options: TokenBucketOptions) {
    this.capacity = positiveNumber(options?.capacity, 'capacity');
    this.#refillPerSecond = positiveNumber(options.refillPerSecond, 'refillPerSecond');
    this.#clock = options.clock ?? systemClock;
    this.#state = { tokens: this.capacity, atMs: this.#clock.now() };
  }

  /** Tokens added per second; settable (the tokens earned so far are kept at the old rate). */
  get refillPerSecond(): number {
    return this.#refillPerSecond;
  }
  set refillPerSecond(value: number) {
    const rate = positiveNumber(value, 'refillPerSecond');
    this.#refill();
    this.#refillPerSecond = rate;
  }

  /** Tokens in the bucket now (may be fractional). */
  get tokens(): number {
    this.#refill();
    return this.#state.tokens;
  }

  /**
   * Takes `cost` tokens (default 1) if that leaves at least `reserved` (default 0). Throws
   * ValidationError for a cost above `capacity - reserved`, which could never succeed.
   */
  take(cost = 1, options: { readonly reserved?: number } = {}): TakeResult {
    const request: TakeRequest = {
      cost,
      capacity: this.capacity,
      refillPerSecond: this.#refillPerSecond,
      ...(options.reserved === undefined ? {} : { reserved: options.reserved }),
    };
    assertTakeRequest(request);
    return takeTokens(this.#state, this.#clock.now(), request);
  }

  #refill(): void {
    takeTokens(this.#state, this.#clock.now(), {
      cost: 0,
      capacity: this.capacity,
      refillPerSecond: this.#refillPerSecond,
    });
  }
}

export interface MemoryRateLimiterOptions {
  /** Buckets kept at most (default 100,000); beyond it the least recently used goes (it comes back full). */
  readonly maxKeys?: number;
  readonly clock?: Clock;
}

export const MEMORY_RATE_LIMITER_DEFAULTS = Object.freeze({ maxKeys: 100_000 });

/** A RateLimiter whose budget lives in this process: a bounded map of buckets. */
export function memoryRateLimiter(options: MemoryRateLimiterOptions = {}): RateLimiter {
  const maxKeys = positiveInteger(options.maxKeys ?? MEMORY_RATE_LIMITER_DEFAULTS.maxKeys, 'maxKeys');
  const clock = options.clock ?? systemClock;
  const buckets = new Map<string, BucketState>();
  return {
    async take(key, request) {
      assertTakeRequest(request);
      const now = clock.now();
      let state = buckets.get(key);
      if (state)
        buckets.delete(key); // re-inserted below: the most recently used in iteration order
      else state = { tokens: request.capacity, atMs: now };
      const result = takeTokens(state, now, request);
      buckets.set(key, state);
      if (buckets.size > maxKeys) buckets.delete(buckets.keys().next().value as string);
      return result;
    },
  };
}
