import { type Clock, systemClock } from './clock.js';
import { DEFAULT_PRIORITY, type Envelope, MAX_PRIORITY } from './envelope.js';
import { ClosedError, ConfigError, describeError, RateLimitedError, UnrecoverableError } from './errors.js';
import type { Middleware, Next } from './middleware.js';
import { memoryRateLimiter, type RateLimiter, type TakeRequest, type TakeResult } from './token-bucket.js';
import { nonNegativeNumber, positiveInteger, positiveNumber } from './validate.js';

/**
 * Whose budget a message spends: its sending agent (`envelope.source`), its topic, its tenant (a
 * header, `tenantHeader`), or what a function of the envelope returns (undefined: not limited).
 */
export type RateLimitKey = 'agent' | 'topic' | 'tenant' | ((envelope: Envelope) => string | undefined);

/** Capacity that only messages of a priority class (or a higher one) may take. */
export interface PriorityClass {
  /** Messages of this priority (1–9) or higher belong to the class. */
  readonly minPriority: number;
  /** Share (0–1) of the bucket's capacity that messages below `minPriority` may not take. */
  readonly reservedShare: number;
}

/**
 * AIMD on the refill rate: after each window, the rate grows by `increaseBy` while the error rate
 * and mean latency of the handlers stay at or under their limits, and is multiplied by
 * `decreaseFactor` when either goes over; it stays within [`minRefillPerSecond`, `maxRefillPerSecond`].
 */
export interface AdaptiveRateOptions {
  /** Lowest rate (default a tenth of `refillPerSecond`). */
  readonly minRefillPerSecond?: number;
  /** Highest rate (default `refillPerSecond`, which is also where it starts). */
  readonly maxRefillPerSecond?: number;
  /** Tokens per second added after a healthy window (default a tenth of `refillPerSecond`). */
  readonly increaseBy?: number;
  /** What the rate is multiplied by after a window over a limit, in (0, 1) (default 0.5). */
  readonly decreaseFactor?: number;
  /** Failed share of the window's handler calls above which the rate is cut, in [0, 1) (default 0.1). */
  readonly maxErrorRate?: number;
  /** Mean handler latency of the window above which the rate is cut (default: latency is not considered). */
  readonly maxLatencyMs?: number;
  /** A window closes once this long has passed… (default 1 s) */
  readonly windowMs?: number;
  /** …and it holds at least this many handler calls (default 10), so a quiet period decides nothing. */
  readonly minimumCalls?: number;
  /** Which handler errors count as failures (default all but UnrecoverableError, which is the message's fault). */
  readonly isFailure?: (err: unknown) => boolean;
  /** Called when the rate changes, e.g. to export a metric. */
  readonly onRateChange?: (refillPerSecond: number, previous: number) => void;
}

export interface RateLimitOptions {
  /** Tokens a bucket holds at most: the largest burst. A bucket starts full. */
  readonly capacity: number;
  /** Tokens added per second to each bucket (the starting rate in adaptive mode). */
  readonly refillPerSecond: number;
  /** One bucket per agent, topic, tenant or key function (default `agent`). */
  readonly key?: RateLimitKey;
  /** The header that names the tenant for `key: 'tenant'` (default `tenant`). */
  readonly tenantHeader?: string;
  /** Tokens a message costs: a number or a function of the envelope, e.g. `(e) => e.data.tokens` (default 1). */
  readonly cost?: number | ((envelope: Envelope) => number);
  /** Which side is limited; `both` keeps separate publish and consume budgets (default `both`). */
  readonly on?: 'publish' | 'consume' | 'both';
  /** Reserved capacity for high priorities; a message of the highest class may take the whole bucket. */
  readonly priorityClasses?: readonly PriorityClass[];
  /** Adapts the refill rate to the handlers' error rate and latency (`true`: the defaults). */
  readonly adaptive?: AdaptiveRateOptions | boolean;
  /**
   * Over the limit, wait up to this long for tokens before refusing (default 0). A waiting
   * delivery gives its concurrency slot up (other keys keep flowing) and keeps its lease, and
   * spends no attempt; a waiting publish resolves later.
   */
  readonly maxWaitMs?: number;
  /** Where the buckets live (default a {@link memoryRateLimiter} on `clock`); `redisRateLimiter` shares them. */
  readonly limiter?: RateLimiter;
  /** Clock of the default limiter and of the adaptive windows and latencies. */
  readonly clock?: Clock;
  /** The middleware's name and the prefix of its bucket keys (default `rate-limit`): give limiters sharing a store their own. */
  readonly name?: string;
}

export const RATE_LIMIT_DEFAULTS = Object.freeze({
  key: 'agent',
  tenantHeader: 'tenant',
  cost: 1,
  on: 'both',
  maxWaitMs: 0,
  name: 'rate-limit',
  adaptive: Object.freeze({
    /** Of `refillPerSecond`: the lowest rate and the additive step. */
    minRefillShare: 0.1,
    increaseShare: 0.1,
    decreaseFactor: 0.5,
    maxErrorRate: 0.1,
    windowMs: 1_000,
    minimumCalls: 10,
  }),
} as const);

/** The rate-limit middleware, with what metrics and tests want to see. */
export interface RateLimitMiddleware extends Middleware {
  /** The refill rate in force now (tokens per second): the configured one, or the adaptive one. */
  currentRate(): number;
}

/**
 * Token-bucket rate limiting keyed by agent, topic, tenant or a function of the envelope. A
 * message spends `cost` tokens of its key's bucket; one below a priority class may not take the
 * capacity reserved for that class.
 *
 * - Publish over the limit: `bus.publish` rejects with a retryable {@link RateLimitedError}
 *   (`retryAfterMs`, also in `data`) and nothing is sent. In a `publishBatch`, tokens taken by
 *   the other messages of a refused batch are not given back.
 * - Consume over the limit: the handler does not run and the delivery is put back with
 *   `nack({ delayMs: retryAfterMs })`, which counts an attempt on every transport. On the
 *   subscription's last attempt it waits for its tokens instead (without a concurrency slot, as
 *   with `maxWaitMs`), so a rate limit never dead-letters a message. A subscription closing
 *   meanwhile puts the delivery back at once.
 * - A cost no bucket could grant (above the capacity left to its priority) is a ValidationError:
 *   publish rejects, a delivery is dead-lettered as `validation`.
 * - A limiter that fails (its Redis is down) fails closed: publish rejects with its error, a
 *   delivery is retried by the bus.
 *
 * In adaptive mode the rate follows the handlers measured on the consume side (one rate for the
 * whole middleware, in force for both sides). With a shared limiter each process passes its own
 * adaptive rate on its takes.
 */
export function rateLimit(options: RateLimitOptions): RateLimitMiddleware {
  const D = RATE_LIMIT_DEFAULTS;
  const capacity = positiveNumber(options?.capacity, 'capacity');
  const refillPerSecond = positiveNumber(options.refillPerSecond, 'refillPerSecond');
  const clock = options.clock ?? systemClock;
  const name = options.name ?? D.name;
  if (typeof name !== 'string' || name === '') throw new ConfigError('must be a non-empty string', { path: 'name' });
  const on = options.on ?? D.on;
  if (on !== 'publish' && on !== 'consume' && on !== 'both') {
    throw new ConfigError(`must be 'publish', 'consume' or 'both', got ${String(on)}`, { path: 'on' });
  }
  const keyOf = keyFunction(options.key ?? D.key, options.tenantHeader ?? D.tenantHeader);
  const costOf = costFunction(options.cost ?? D.cost, capacity);
  const reservedOf = reservedFunction(options.priorityClasses ?? [], capacity);
  const maxWaitMs = nonNegativeNumber(options.maxWaitMs ?? D.maxWaitMs, 'maxWaitMs');
  const limiter = options.limiter ?? memoryRateLimiter({ clock });
  if (typeof limiter?.take !== 'function') {
    throw new ConfigError('must be a RateLimiter (an object with take)', { path: 'limiter' });
  }
  const aimd =
    options.adaptive === undefined || options.adaptive === false
      ? undefined
      : new AimdRate(options.adaptive === true ? {} : options.adaptive, refillPerSecond, clock);
  const currentRate = () => aimd?.rate ?? refillPerSecond;

  const requestFor = (env: Envelope): TakeRequest => ({
    cost: costOf(env),
    capacity,
    refillPerSecond: currentRate(),
    reserved: reservedOf(env),
  });

  /**
   * Takes for `env` on `side`, waiting for tokens (through `pause`) while the wait stays within
   * `waitLimitMs`. Resolves undefined when admitted or not limited, else the refusal.
   */
  const admit = async (
    side: string,
    env: Envelope,
    waitLimitMs: number,
    pause: (ms: number) => Promise<void>,
    signal?: AbortSignal,
  ) => {
    const k = keyOf(env);
    if (k === undefined) return undefined;
    const key = `${name}:${side}:${k}`;
    let r = await limiter.take(key, requestFor(env));
    let waitedMs = 0;
    while (!r.allowed && waitedMs + r.retryAfterMs <= waitLimitMs && !signal?.aborted) {
      await pause(r.retryAfterMs);
      waitedMs += r.retryAfterMs;
      r = await limiter.take(key, requestFor(env));
    }
    return r.allowed ? undefined : refusal(k, side, r);
  };

  const run = async (next: Next) => {
    if (!aimd) return next();
    const start = clock.now();
    try {
      await next();
    } catch (err) {
      aimd.record(aimd.isFailure(err), clock.now() - start);
      throw err;
    }
    aimd.record(false, clock.now() - start);
  };

  const mw: RateLimitMiddleware = { name, currentRate };
  if (on !== 'consume') {
    mw.publish = async (ctx, next) => {
      const refused = await admit('publish', ctx.envelope, maxWaitMs, (ms) => delay(ms));
      if (refused) throw refused;
      await next();
    };
  }
  if (on !== 'publish' || aimd) {
    mw.consume = async (ctx, next) => {
      if (on !== 'publish') {
        const { delivery } = ctx;
        // A put-back on the last attempt would come back as a dead letter (max-attempts): being
        // over a rate limit is no failure, so the last attempt waits for its tokens instead.
        const last = delivery.attempt >= ctx.subscription.maxAttempts;
        // Waiting gives the concurrency slot up (other keys keep flowing) and keeps the lease.
        const pause = async (ms: number) => {
          const stop = new AbortController();
          try {
            await ctx.wait(delay(ms, AbortSignal.any([stop.signal, delivery.signal])));
          } finally {
            stop.abort();
          }
        };
        let refused: RateLimitedError | undefined;
        try {
          refused = await admit(
            'consume',
            ctx.envelope,
            last ? Number.POSITIVE_INFINITY : maxWaitMs,
            pause,
            delivery.signal,
          );
        } catch (err) {
          if (!(err instanceof ClosedError)) throw err;
          // The subscription is closing while this delivery waits: put it back at once.
          await delivery.nack({ delayMs: 0, error: describeError(err) });
          return;
        }
        if (refused) {
          ctx.state.set(name, 'limited');
          await delivery.nack({ delayMs: refused.retryAfterMs ?? 1, error: describeError(refused) });
          return;
        }
      }
      await run(next);
    };
  }
  return mw;
}

export interface FanOutCapOptions {
  /** Publishes a workflow may make in a burst, and on average per `windowMs`. */
  readonly maxPublishes: number;
  readonly windowMs: number;
  /** Where the counts live (default a {@link memoryRateLimiter} on `clock`); `redisRateLimiter` shares them. */
  readonly limiter?: RateLimiter;
  readonly clock?: Clock;
  /** The middleware's name and the prefix of its keys (default `fan-out-cap`). */
  readonly name?: string;
}

/**
 * Caps what one workflow (`envelope.workflowid`) may publish, so that one runaway agent cannot
 * flood the others: a token bucket of `maxPublishes` per workflow, refilled over `windowMs` — a
 * burst of up to `maxPublishes`, then `maxPublishes` per `windowMs` on average. A publish beyond
 * it rejects with a retryable {@link RateLimitedError} (`retryAfterMs`) and nothing is sent.
 * Envelopes without a `workflowid` are not capped.
 */
export function fanOutCap(options: FanOutCapOptions): Middleware {
  const maxPublishes = positiveInteger(options?.maxPublishes, 'maxPublishes');
  const windowMs = positiveNumber(options.windowMs, 'windowMs');
  const name = options.name ?? 'fan-out-cap';
  if (typeof name !== 'string' || name === '') throw new ConfigError('must be a non-empty string', { path: 'name' });
  const limiter = options.limiter ?? memoryRateLimiter({ clock: options.clock ?? systemClock });
  if (typeof limiter?.take !== 'function') {
    throw new ConfigError('must be a RateLimiter (an object with take)', { path: 'limiter' });
  }
  const request: TakeRequest = { cost: 1, capacity: maxPublishes, refillPerSecond: (maxPublishes * 1000) / windowMs };
  return {
    name,
    async publish(ctx, next) {
      const workflow = ctx.envelope.workflowid;
      if (workflow !== undefined) {
        const r = await limiter.take(`${name}:${workflow}`, request);
        if (!r.allowed) {
          throw new RateLimitedError(
            `workflow ${workflow} published its ${maxPublishes} messages per ${windowMs} ms: retry after ${r.retryAfterMs} ms`,
            { retryAfterMs: r.retryAfterMs, data: { workflowid: workflow, maxPublishes, windowMs } },
          );
        }
      }
      await next();
    },
  };
}

function refusal(key: string, side: string, r: TakeResult): RateLimitedError {
  return new RateLimitedError(`rate limit of ${key} reached on ${side}: retry after ${r.retryAfterMs} ms`, {
    retryAfterMs: r.retryAfterMs,
    data: { key, side },
  });
}

function delay(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}

function keyFunction(key: RateLimitKey, tenantHeader: string): (env: Envelope) => string | undefined {
  if (typeof tenantHeader !== 'string' || tenantHeader === '') {
    throw new ConfigError('must be a non-empty string', { path: 'tenantHeader' });
  }
  if (key === 'agent') return (env) => `agent:${env.source}`;
  if (key === 'topic') return (env) => `topic:${env.topic}`;
  // Messages without the header share one bucket: leaving it out is no way around the limit.
  if (key === 'tenant') return (env) => `tenant:${env.headers?.[tenantHeader] ?? ''}`;
  if (typeof key !== 'function') {
    throw new ConfigError(`must be 'agent', 'topic', 'tenant' or a function, got ${String(key)}`, { path: 'key' });
  }
  return (env) => {
    const k = key(env);
    if (k !== undefined && typeof k !== 'string') {
      throw new ConfigError(`the key function must return a string or undefined, got ${typeof k}`, { path: 'key' });
    }
    return k;
  };
}

function costFunction(cost: RateLimitOptions['cost'], capacity: number): (env: Envelope) => number {
  if (typeof cost === 'function') return cost;
  const fixed = nonNegativeNumber(cost, 'cost');
  if (fixed > capacity) throw new ConfigError(`must be at most capacity ${capacity}, got ${fixed}`, { path: 'cost' });
  return () => fixed;
}

/** Tokens a message of each priority must leave in the bucket: the shares of the classes above it. */
function reservedFunction(classes: readonly PriorityClass[], capacity: number): (env: Envelope) => number {
  if (!Array.isArray(classes)) throw new ConfigError('must be a list', { path: 'priorityClasses' });
  const seen = new Set<number>();
  let total = 0;
  classes.forEach((c, i) => {
    const path = `priorityClasses[${i}]`;
    const p = c?.minPriority;
    if (!Number.isInteger(p) || p < 1 || p > MAX_PRIORITY || seen.has(p)) {
      throw new ConfigError(`must be a distinct integer 1–${MAX_PRIORITY}, got ${String(p)}`, {
        path: `${path}.minPriority`,
      });
    }
    seen.add(p);
    const share = c.reservedShare;
    if (typeof share !== 'number' || !(share > 0 && share < 1)) {
      throw new ConfigError(`must be a number in (0, 1), got ${String(share)}`, { path: `${path}.reservedShare` });
    }
    total += share;
  });
  if (total >= 1) {
    throw new ConfigError(`reserved shares add up to ${total}; they must leave some capacity (< 1)`, {
      path: 'priorityClasses',
    });
  }
  const byPriority = Array.from({ length: MAX_PRIORITY + 1 }, (_, p) =>
    classes.reduce((sum, c) => (c.minPriority > p ? sum + c.reservedShare * capacity : sum), 0),
  );
  return (env) => byPriority[env.priority ?? DEFAULT_PRIORITY] ?? 0;
}

/** Additive increase, multiplicative decrease of a rate, decided once per window of handler calls. */
class AimdRate {
  rate: number;
  readonly isFailure: (err: unknown) => boolean;
  readonly #min: number;
  readonly #max: number;
  readonly #increaseBy: number;
  readonly #decreaseFactor: number;
  readonly #maxErrorRate: number;
  readonly #maxLatencyMs: number;
  readonly #windowMs: number;
  readonly #minimumCalls: number;
  readonly #onChange: AdaptiveRateOptions['onRateChange'];
  readonly #clock: Clock;
  #windowStart: number;
  #calls = 0;
  #failures = 0;
  #latencyMs = 0;

  constructor(o: AdaptiveRateOptions, initial: number, clock: Clock) {
    const D = RATE_LIMIT_DEFAULTS.adaptive;
    const path = (f: string) => `adaptive.${f}`;
    this.#min = positiveNumber(o.minRefillPerSecond ?? initial * D.minRefillShare, path('minRefillPerSecond'));
    this.#max = positiveNumber(o.maxRefillPerSecond ?? initial, path('maxRefillPerSecond'));
    if (!(this.#min <= initial && initial <= this.#max)) {
      throw new ConfigError(
        `refillPerSecond ${initial} must lie within [minRefillPerSecond ${this.#min}, maxRefillPerSecond ${this.#max}]`,
        { path: 'adaptive' },
      );
    }
    this.#increaseBy = positiveNumber(o.increaseBy ?? initial * D.increaseShare, path('increaseBy'));
    this.#decreaseFactor = o.decreaseFactor ?? D.decreaseFactor;
    if (typeof this.#decreaseFactor !== 'number' || !(this.#decreaseFactor > 0 && this.#decreaseFactor < 1)) {
      throw new ConfigError(`must be a number in (0, 1), got ${String(this.#decreaseFactor)}`, {
        path: path('decreaseFactor'),
      });
    }
    this.#maxErrorRate = o.maxErrorRate ?? D.maxErrorRate;
    if (typeof this.#maxErrorRate !== 'number' || !(this.#maxErrorRate >= 0 && this.#maxErrorRate < 1)) {
      throw new ConfigError(`must be a number in [0, 1), got ${String(this.#maxErrorRate)}`, {
        path: path('maxErrorRate'),
      });
    }
    this.#maxLatencyMs =
      o.maxLatencyMs === undefined ? Number.POSITIVE_INFINITY : positiveNumber(o.maxLatencyMs, path('maxLatencyMs'));
    this.#windowMs = positiveNumber(o.windowMs ?? D.windowMs, path('windowMs'));
    this.#minimumCalls = positiveInteger(o.minimumCalls ?? D.minimumCalls, path('minimumCalls'));
    this.isFailure = o.isFailure ?? ((err) => !(err instanceof UnrecoverableError));
    if (typeof this.isFailure !== 'function') {
      throw new ConfigError('must be a function', { path: path('isFailure') });
    }
    this.#onChange = o.onRateChange;
    this.#clock = clock;
    this.rate = initial;
    this.#windowStart = clock.now();
  }

  record(failed: boolean, latencyMs: number): void {
    this.#calls++;
    if (failed) this.#failures++;
    this.#latencyMs += latencyMs;
    const now = this.#clock.now();
    if (now - this.#windowStart < this.#windowMs || this.#calls < this.#minimumCalls) return;
    const congested =
      this.#failures / this.#calls > this.#maxErrorRate || this.#latencyMs / this.#calls > this.#maxLatencyMs;
    const previous = this.rate;
    this.rate = congested
      ? Math.max(this.#min, this.rate * this.#decreaseFactor)
      : Math.min(this.#max, this.rate + this.#increaseBy);
    this.#windowStart = now;
    this.#calls = 0;
    this.#failures = 0;
    this.#latencyMs = 0;
    if (this.rate !== previous) this.#onChange?.(this.rate, previous);
  }
}
