import { type Clock, systemClock } from './clock.js';
import { BusError, ConfigError, describeError, UnrecoverableError } from './errors.js';
import { type ConsumeContext, HANDLED_SYNC, type Middleware } from './middleware.js';
import { positiveInteger, positiveNumber } from './validate.js';

/** An error class, or a BusError code, for {@link RetryPolicyOptions}. */
export type ErrorMatcher = string | (abstract new (...args: never[]) => Error);

export interface RetryPolicyOptions {
  /** Errors never worth retrying (a bad request to a model API, a validation error): dead-lettered at once. */
  readonly unrecoverable?: readonly ErrorMatcher[] | ((err: unknown) => boolean);
  /**
   * At most this many retries per `perMs` for the whole subscription (a retry budget): when a
   * dependency fails for everyone, retries stop multiplying the load. A failure beyond the budget
   * is dead-lettered with reason `retry-budget` (replay it when the dependency is back).
   */
  readonly budget?: { readonly retries: number; readonly perMs: number };
  readonly clock?: Clock;
}

function matches(err: unknown, m: ErrorMatcher): boolean {
  if (typeof m === 'string') return err instanceof BusError ? err.code === m : (err as { code?: unknown })?.code === m;
  return err instanceof m;
}

/**
 * Classifies handler failures before the bus retries them (exponential backoff with jitter, per
 * the subscription's `backoff` and `maxAttempts`): errors listed as unrecoverable are
 * dead-lettered at once, and a retry budget caps how many retries the subscription makes per
 * window. One budget per middleware instance: use one instance per subscription (or bus) that
 * should share a budget.
 */
export function retryPolicy(options: RetryPolicyOptions = {}): Middleware & { readonly retriesLeft: () => number } {
  const clock = options.clock ?? systemClock;
  const u = options.unrecoverable ?? [];
  if (typeof u !== 'function' && !Array.isArray(u)) {
    throw new ConfigError('must be a list of error classes or codes, or a predicate', { path: 'unrecoverable' });
  }
  const isUnrecoverable = typeof u === 'function' ? u : (err: unknown) => u.some((m) => matches(err, m));
  const budget = options.budget && {
    retries: positiveInteger(options.budget.retries, 'budget.retries'),
    perMs: positiveNumber(options.budget.perMs, 'budget.perMs'),
  };
  // A token bucket: `retries` tokens, refilled continuously over `perMs`.
  let tokens = budget?.retries ?? Number.POSITIVE_INFINITY;
  let at = clock.now();
  const refill = () => {
    if (!budget) return;
    const now = clock.now();
    tokens = Math.min(budget.retries, tokens + ((now - at) * budget.retries) / budget.perMs);
    at = now;
  };
  /** Rethrows `err`, as UnrecoverableError if it is listed as such. */
  const classify = (err: unknown): never => {
    if (err instanceof UnrecoverableError) throw err;
    if (isUnrecoverable(err)) throw new UnrecoverableError(describeError(err), { cause: err });
    throw err;
  };
  const onFailure = async (ctx: ConsumeContext, err: unknown): Promise<void> => {
    if (err instanceof UnrecoverableError) throw err;
    if (isUnrecoverable(err)) throw new UnrecoverableError(describeError(err), { cause: err });
    if (budget) {
      refill();
      if (tokens < 1) {
        await ctx.delivery.deadLetter('retry-budget', {
          error: `retry budget of ${budget.retries} per ${budget.perMs} ms spent; last error: ${describeError(err)}`,
        });
        return;
      }
      tokens -= 1;
    }
    throw err;
  };
  return {
    name: 'retry-policy',
    retriesLeft: () => {
      refill();
      return Math.floor(tokens);
    },
    // Not async: a delivery that succeeds costs one promise, not an async frame around `next`.
    consume(ctx, next) {
      // Nothing listed as unrecoverable and no budget: a failure passes through as it is.
      if (!budget && typeof u !== 'function' && u.length === 0) return next();
      let pending: Promise<void>;
      try {
        pending = next();
      } catch (err) {
        return onFailure(ctx, err);
      }
      // Finished synchronously: nothing failed.
      if (pending === HANDLED_SYNC) return pending;
      // Without a budget a failure needs no context: no closure per delivery.
      return budget
        ? pending.then(undefined, (err: unknown) => onFailure(ctx, err))
        : pending.then(undefined, classify);
    },
  };
}
