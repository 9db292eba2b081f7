import { ClosedError } from './errors.js';
import type { ManagedDelivery } from './managed-delivery.js';
import type { Subscription } from './transport.js';

/**
 * The reader side of a subscription fed by a broker (deliveries arrive on their own, as with an
 * AMQP consumer or JetStream pull requests), for transport authors: a subclass buffers what
 * arrives, answers `poll()` and calls `wakeReader()` when something arrived; `next()` waits for
 * that. `close()` is idempotent and runs `doClose()` once.
 */
export abstract class PushSubscription implements Subscription<ManagedDelivery> {
  #waiter: (() => void) | undefined;
  #closed = false;
  #closing: Promise<void> | undefined;

  get closed(): boolean {
    return this.#closed;
  }

  /** A buffered delivery to hand out now, or undefined (always undefined once closed). */
  abstract poll(): ManagedDelivery | undefined;

  /** Gives back what the subscription holds and releases its resources (runs once). */
  protected abstract doClose(): Promise<void>;

  /** Something arrived (or the subscription closed): a reader waiting in next() looks again. */
  protected wakeReader(): void {
    const w = this.#waiter;
    this.#waiter = undefined;
    w?.();
  }

  async next(): Promise<IteratorResult<ManagedDelivery>> {
    for (;;) {
      if (this.#closed) return { done: true, value: undefined };
      const d = this.poll();
      if (d) return { done: false, value: d };
      if (this.#waiter) throw new ClosedError('a subscription has one reader at a time');
      await new Promise<void>((resolve) => {
        this.#waiter = resolve;
      });
    }
  }

  [Symbol.asyncIterator](): AsyncIterator<ManagedDelivery> {
    return {
      next: () => this.next(),
      return: async () => {
        await this.close();
        return { done: true, value: undefined };
      },
    };
  }

  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#closed = true;
      this.wakeReader();
      await this.doClose();
    })();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
