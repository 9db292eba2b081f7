import type { Delivery } from './delivery.js';
import type { Envelope } from './envelope.js';

/** What a publish hook sees; replace `envelope` to change what is sent (envelopes are immutable). */
export interface PublishContext {
  envelope: Envelope;
}

/** The settings of the subscription a delivery came from. */
export interface SubscriptionInfo {
  readonly pattern: string;
  readonly group: string;
  readonly concurrency: number;
  readonly prefetch: number;
  /** A failure on this attempt or later is dead-lettered rather than retried. */
  readonly maxAttempts: number;
}

/** What a consume hook sees for one delivery. */
export interface ConsumeContext {
  readonly envelope: Envelope;
  readonly delivery: Delivery;
  /** The subscription's pattern and group. */
  readonly pattern: string;
  readonly group: string;
  readonly subscription: SubscriptionInfo;
  /** Scratch space shared by the middleware of one delivery. */
  readonly state: Map<string, unknown>;
  /**
   * Waits for `promise` without holding one of the subscription's concurrency slots, so that
   * other deliveries run meanwhile (a reorder buffer holding a message for its turn). The lease
   * is kept. Rejects with ClosedError if the subscription closes first; the delivery is then
   * put back for redelivery.
   */
  wait<T>(promise: Promise<T>): Promise<T>;
}

export type Next = () => Promise<void>;

/**
 * A named pair of optional hooks, so that one object can, say, sign outbound and verify inbound.
 * A hook that does not call `next` stops the message there (publish: not sent; consume: the
 * handler does not run and the delivery is acked unless the hook settled it).
 */
export interface Middleware {
  readonly name: string;
  publish?(ctx: PublishContext, next: Next): Promise<void>;
  consume?(ctx: ConsumeContext, next: Next): Promise<void>;
}

/** Runs `hooks` in order around `terminal`. */
export function compose<C>(
  hooks: readonly ((ctx: C, next: Next) => Promise<void>)[],
  terminal: (ctx: C) => Promise<void>,
) {
  return (ctx: C): Promise<void> => {
    const step = (i: number): Promise<void> => {
      const hook = hooks[i];
      if (!hook) return terminal(ctx);
      let called = false;
      return hook(ctx, () => {
        if (called) return Promise.reject(new Error(`middleware called next() twice`));
        called = true;
        return step(i + 1);
      });
    };
    return step(0);
  };
}
