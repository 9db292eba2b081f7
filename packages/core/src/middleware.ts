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

/** What a subscribe hook sees: the subscription about to be made. */
export interface SubscribeContext {
  readonly pattern: string;
  readonly group: string;
}

export type Next = () => Promise<void>;

/**
 * The promise `next()` returns when the rest of the consume chain finished synchronously (the
 * handler returned no promise, and so did the hooks after this one): a hook may compare against
 * it to finish synchronously too, returning it, instead of waiting a microtask. The bus then
 * settles the delivery at once, as it does for a synchronous handler without hooks.
 */
export const HANDLED_SYNC: Promise<void> = Promise.resolve();

/**
 * A named pair of optional hooks, so that one object can, say, sign outbound and verify inbound.
 * A hook that does not call `next` stops the message there (publish: not sent; consume: the
 * handler does not run and the delivery is acked unless the hook settled it).
 */
export interface Middleware {
  readonly name: string;
  publish?(ctx: PublishContext, next: Next): Promise<void>;
  consume?(ctx: ConsumeContext, next: Next): Promise<void>;
  /**
   * Runs before the transport subscription of `bus.subscribe` (and so of `reply`, and of the
   * reply inbox of `request`) is made; throwing (or rejecting) refuses the subscription, which
   * is then never made. Hooks run in the order added.
   */
  subscribe?(ctx: SubscribeContext): void | Promise<void>;
}

/**
 * Runs `hooks` in order around `terminal`. A hook or terminal that throws instead of returning a
 * rejected promise counts as one that rejected: the hook before it sees the error as the
 * rejection of its `next()`, which never throws.
 */
export function compose<C>(
  hooks: readonly ((ctx: C, next: Next) => Promise<void>)[],
  terminal: (ctx: C) => Promise<void>,
) {
  const n = hooks.length;
  const step = (ctx: C, i: number): Promise<void> => {
    try {
      if (i === n) return terminal(ctx);
      let called = false;
      return (hooks[i] as (ctx: C, next: Next) => Promise<void>)(ctx, () => {
        if (called) return Promise.reject(new Error(`middleware called next() twice`));
        called = true;
        return step(ctx, i + 1);
      });
    } catch (err) {
      return Promise.reject(err);
    }
  };
  return (ctx: C): Promise<void> => step(ctx, 0);
}
