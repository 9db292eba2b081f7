import { TimeoutError } from './errors.js';
import type { Middleware } from './middleware.js';
import { positiveNumber } from './validate.js';

export interface HandlerTimeoutOptions {
  /** How long a handler may run (ms). */
  readonly ms: number;
}

/**
 * Bounds how long a handler runs: when `ms` pass, the delivery's `signal` is aborted with a
 * TimeoutError and the delivery fails with it (retryable: nacked with backoff, dead-lettered after
 * maxAttempts). A handler that ignores the signal keeps running in the background, but its late
 * result changes nothing (the first settle wins).
 */
export function handlerTimeout(options: HandlerTimeoutOptions): Middleware {
  const ms = positiveNumber(options?.ms, 'ms');
  return {
    name: 'handler-timeout',
    async consume(ctx, next) {
      const ac = new AbortController();
      ctx.delivery.useSignal(ac.signal);
      let timer: NodeJS.Timeout | undefined;
      const expired = new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          const err = new TimeoutError(`handler did not finish within ${ms} ms`);
          ac.abort(err);
          reject(err);
        }, ms);
      });
      try {
        await Promise.race([next(), expired]);
      } finally {
        clearTimeout(timer);
      }
    },
  };
}
