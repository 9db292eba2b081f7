import { type Clock, systemClock } from './clock.js';
import { CircuitOpenError, ConfigError, UnrecoverableError } from './errors.js';
import type { Middleware } from './middleware.js';
import { positiveInteger, positiveNumber } from './validate.js';

export type CircuitState = 'closed' | 'open' | 'half-open';

export interface CircuitBreakerOptions {
  /** Consecutive failures that open the circuit (default 5). */
  readonly consecutiveFailures?: number;
  /** Failure rate (0–1] over the last `window` calls that opens it (default 0.5)… */
  readonly failureRate?: number;
  /** …once at least `minimumCalls` of them were made (defaults 20 and 10). */
  readonly window?: number;
  readonly minimumCalls?: number;
  /** How long it stays open before it lets trial calls through (default 30 s). */
  readonly recoveryTimeoutMs?: number;
  /** Trial calls in half-open: all succeed → closed; one fails → open again (default 1). */
  readonly halfOpenTrials?: number;
  /** Which errors count as failures (default: all but UnrecoverableError, which is the message's fault). */
  readonly isFailure?: (err: unknown) => boolean;
  readonly clock?: Clock;
  /** Called on every state change, e.g. to log or export a metric. */
  readonly onStateChange?: (state: CircuitState, previous: CircuitState) => void;
}

/** What health and metrics report of a breaker. */
export interface CircuitSnapshot {
  readonly state: CircuitState;
  readonly consecutiveFailures: number;
  /** Failures among the calls in the window, and how many calls it holds. */
  readonly windowFailures: number;
  readonly windowCalls: number;
  /** When an open circuit lets a trial through (epoch ms), if open. */
  readonly retryAt?: number;
}

/**
 * A circuit breaker (closed → open → half-open → closed) for a dependency that fails for a while
 * (a model API, a downstream service): once it has failed `consecutiveFailures` times in a row,
 * or at `failureRate` over the last `window` calls, calls fail at once with CircuitOpenError for
 * `recoveryTimeoutMs`; then `halfOpenTrials` calls go through, and their outcome closes or
 * reopens it.
 */
export class CircuitBreaker {
  readonly #o: Required<Omit<CircuitBreakerOptions, 'onStateChange'>>;
  readonly #onChange: CircuitBreakerOptions['onStateChange'];
  #state: CircuitState = 'closed';
  #consecutive = 0;
  /** Outcomes of the last calls, true = failed. */
  #window: boolean[] = [];
  #openedAt = 0;
  #trialsStarted = 0;
  #trialsPassed = 0;

  constructor(options: CircuitBreakerOptions = {}) {
    const rate = options.failureRate ?? 0.5;
    if (typeof rate !== 'number' || !(rate > 0 && rate <= 1)) {
      throw new ConfigError(`must be a number in (0, 1], got ${String(rate)}`, { path: 'failureRate' });
    }
    this.#o = {
      consecutiveFailures: positiveInteger(options.consecutiveFailures ?? 5, 'consecutiveFailures'),
      failureRate: rate,
      window: positiveInteger(options.window ?? 20, 'window'),
      minimumCalls: positiveInteger(options.minimumCalls ?? 10, 'minimumCalls'),
      recoveryTimeoutMs: positiveNumber(options.recoveryTimeoutMs ?? 30_000, 'recoveryTimeoutMs'),
      halfOpenTrials: positiveInteger(options.halfOpenTrials ?? 1, 'halfOpenTrials'),
      isFailure: options.isFailure ?? ((err) => !(err instanceof UnrecoverableError)),
      clock: options.clock ?? systemClock,
    };
    this.#onChange = options.onStateChange;
  }

  /** The state now (an open circuit whose recovery time passed reads as half-open). */
  get state(): CircuitState {
    if (this.#state === 'open' && this.#o.clock.now() >= this.#openedAt + this.#o.recoveryTimeoutMs) {
      this.#set('half-open');
    }
    return this.#state;
  }

  snapshot(): CircuitSnapshot {
    const state = this.state;
    const windowFailures = this.#window.filter(Boolean).length;
    return {
      state,
      consecutiveFailures: this.#consecutive,
      windowFailures,
      windowCalls: this.#window.length,
      ...(state === 'open' ? { retryAt: this.#openedAt + this.#o.recoveryTimeoutMs } : {}),
    };
  }

  /** Runs `fn` unless the circuit is open (then CircuitOpenError, retryable, with `retryAfterMs`). */
  async run<T>(fn: () => T | Promise<T>): Promise<T> {
    this.#admit();
    let result: T;
    try {
      result = await fn();
    } catch (err) {
      this.#record(this.#o.isFailure(err));
      throw err;
    }
    this.#record(false);
    return result;
  }

  /** Throws CircuitOpenError unless a call may go through now. */
  #admit(): void {
    const state = this.state;
    if (state === 'closed') return;
    if (state === 'half-open' && this.#trialsStarted < this.#o.halfOpenTrials) {
      this.#trialsStarted++;
      return;
    }
    const retryAfterMs =
      state === 'open' ? Math.max(0, this.#openedAt + this.#o.recoveryTimeoutMs - this.#o.clock.now()) : 100;
    throw new CircuitOpenError(`circuit open: calls are refused for ${Math.ceil(retryAfterMs)} ms`, {
      data: { retryAfterMs },
    });
  }

  #record(failed: boolean): void {
    if (this.#state === 'half-open') {
      if (failed) this.#open();
      else if (++this.#trialsPassed >= this.#o.halfOpenTrials) this.#close();
      return;
    }
    if (this.#state === 'open') return; // a call admitted before it opened
    this.#consecutive = failed ? this.#consecutive + 1 : 0;
    this.#window.push(failed);
    if (this.#window.length > this.#o.window) this.#window.shift();
    const failures = this.#window.filter(Boolean).length;
    const rateTripped =
      this.#window.length >= this.#o.minimumCalls && failures / this.#window.length >= this.#o.failureRate;
    if (this.#consecutive >= this.#o.consecutiveFailures || (failed && rateTripped)) this.#open();
  }

  #open(): void {
    this.#openedAt = this.#o.clock.now();
    this.#set('open');
  }

  #close(): void {
    this.#consecutive = 0;
    this.#window = [];
    this.#set('closed');
  }

  #set(state: CircuitState): void {
    const previous = this.#state;
    if (previous === state) return;
    this.#state = state;
    this.#trialsStarted = 0;
    this.#trialsPassed = 0;
    this.#onChange?.(state, previous);
  }
}

/**
 * A circuit breaker around handlers: while it is open, deliveries are put back (nack, delayed
 * until the breaker lets a trial through) without running the handler, so a failing dependency
 * is not hammered. Each put-back counts an attempt: give subscriptions behind a breaker a
 * `maxAttempts` that covers the outages you expect. `breaker` may be shared with the outbound
 * calls that depend on the same service.
 */
export function circuitBreaker(
  options: CircuitBreakerOptions & { readonly breaker?: CircuitBreaker } = {},
): Middleware & {
  readonly breaker: CircuitBreaker;
} {
  const breaker = options.breaker ?? new CircuitBreaker(options);
  return {
    name: 'circuit-breaker',
    breaker,
    async consume(ctx, next) {
      try {
        await breaker.run(next);
      } catch (err) {
        if (!(err instanceof CircuitOpenError)) throw err;
        const retryAfterMs = (err.data as { retryAfterMs: number }).retryAfterMs;
        ctx.state.set('circuit', 'open');
        await ctx.delivery.nack({ delayMs: Math.max(1, retryAfterMs), error: err.message });
      }
    },
  };
}
