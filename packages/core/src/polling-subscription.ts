import { ClosedError } from './errors.js';
import { Fifo } from './fifo.js';
import type { ManagedDelivery } from './managed-delivery.js';
import type { Subscription } from './transport.js';

/** Where a PollingSubscription takes its deliveries from. */
export interface ClaimSource {
  /** Leases up to `max` ready deliveries (possibly none). */
  claim(max: number): ManagedDelivery[] | Promise<ManagedDelivery[]>;
  /**
   * Gives an unsettled delivery back for immediate redelivery; `handedOut` is false for a
   * delivery that was claimed but never seen by the consumer (its attempt must not count).
   */
  release(delivery: ManagedDelivery, handedOut: boolean): void | Promise<void>;
  /**
   * Called once when the subscription closes, after its deliveries were released (an ephemeral
   * group is removed here); close() resolves when it has.
   */
  onClose?(): void | Promise<void>;
}

export interface PollingSubscriptionOptions {
  readonly prefetch: number;
  /** How long to wait before polling again when nothing was ready and no wake-up came. */
  readonly pollIntervalMs: number;
  /**
   * The lease length of claimed deliveries. Deliveries claimed ahead of the consumer (prefetch)
   * have their leases renewed every third of it until they are handed out, so that a slow
   * consumer's buffer is not redelivered elsewhere while it waits.
   */
  readonly leaseMs?: number;
}

/**
 * A pull-based subscription for transports that lease messages from a store (memory, SQLite):
 * it claims at most `prefetch` unsettled deliveries, sleeps until `wake()` or the poll interval
 * when nothing is ready, and releases what is unsettled on close.
 */
export class PollingSubscription implements Subscription<ManagedDelivery> {
  readonly #source: ClaimSource;
  readonly #options: PollingSubscriptionOptions;
  readonly #buffer = new Fifo<ManagedDelivery>();
  /**
   * Deliveries claimed and not yet settled (buffered or handed out), one slot per unit of
   * prefetch; slots rather than a Set, so the hot path does no hashing.
   */
  readonly #outstanding: (ManagedDelivery | undefined)[];
  readonly #freeSlots: number[];
  #closed = false;
  #closing: Promise<void> | undefined;
  #wakeUp: (() => void) | undefined;
  #woken = false;
  #pulling = false;
  #renewer: NodeJS.Timeout | undefined;
  /** The claim in flight, if any. */
  #claiming: Promise<ManagedDelivery[]> | undefined;

  readonly #onSettled = (d: ManagedDelivery): void => {
    if (this.#outstanding[d.slot] === d) {
      this.#outstanding[d.slot] = undefined;
      this.#freeSlots.push(d.slot);
    }
    this.wake();
  };

  constructor(source: ClaimSource, options: PollingSubscriptionOptions) {
    this.#source = source;
    this.#options = options;
    this.#outstanding = new Array(options.prefetch).fill(undefined);
    const leaseMs = options.leaseMs;
    if (leaseMs !== undefined) {
      this.#renewer = setInterval(
        () => {
          for (const d of this.#buffer) d.extend(leaseMs).catch(() => {}); // a failed renewal only means a redelivery
        },
        Math.max(1, Math.floor(leaseMs / 3)),
      );
      this.#renewer.unref();
    }
    this.#freeSlots = Array.from({ length: options.prefetch }, (_, i) => options.prefetch - 1 - i);
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Signals that deliveries may be ready (a local publish, a settle, a release). */
  wake(): void {
    this.#woken = true;
    const w = this.#wakeUp;
    if (w) {
      this.#wakeUp = undefined;
      w();
    }
  }

  /** A buffered unsettled delivery, or undefined when the buffer is empty (or a pull is pending). */
  poll(): ManagedDelivery | undefined {
    if (this.#closed || this.#pulling) return undefined;
    for (let d = this.#buffer.shift(); d; d = this.#buffer.shift()) {
      if (!d.settled) return d;
    }
    return undefined;
  }

  next(): Promise<IteratorResult<ManagedDelivery>> {
    // Fast path: a buffered delivery needs no async machinery.
    const d = this.poll();
    if (d !== undefined) return Promise.resolve({ done: false, value: d });
    return this.#next();
  }

  async #next(): Promise<IteratorResult<ManagedDelivery>> {
    if (this.#pulling) throw new ClosedError('a subscription has one reader at a time');
    this.#pulling = true;
    try {
      for (;;) {
        if (this.#closed) return { done: true, value: undefined };
        const buffered = this.#buffer.shift();
        if (buffered) {
          if (buffered.settled) continue;
          return { done: false, value: buffered };
        }
        const room = this.#freeSlots.length;
        if (room > 0) {
          this.#woken = false;
          const claiming = this.#claimOrRelease(room);
          this.#claiming = claiming;
          const claimed = await claiming.finally(() => {
            this.#claiming = undefined;
          });
          if (this.#closed) {
            // close() ran while the claim was returning and saw none of these: give them back.
            await this.#releaseAll(claimed.map((d) => [d, false]));
            return { done: true, value: undefined };
          }
          if (claimed.length > 0) {
            for (const d of claimed) {
              d.onSettled = this.#onSettled;
              d.slot = this.#freeSlots.pop() as number;
              this.#outstanding[d.slot] = d;
              this.#buffer.push(d);
            }
            continue;
          }
        }
        await this.#sleep();
      }
    } finally {
      this.#pulling = false;
    }
  }

  /**
   * Claims; should the subscription have closed meanwhile, gives the claim back at once (not
   * counted as an attempt) and resolves with nothing. `close()` waits for this.
   */
  async #claimOrRelease(room: number): Promise<ManagedDelivery[]> {
    const claimed = await this.#source.claim(room);
    if (!this.#closed) return claimed;
    await this.#releaseAll(claimed.map((d) => [d, false]));
    return [];
  }

  /** Releases each delivery; one failure does not stop the others (the first is rethrown after). */
  async #releaseAll(items: readonly [ManagedDelivery, boolean][]): Promise<void> {
    let failure: unknown;
    for (const [d, handedOut] of items) {
      try {
        await this.#source.release(d, handedOut);
      } catch (err) {
        failure ??= err;
      }
    }
    if (failure !== undefined) throw failure;
  }

  #sleep(): Promise<void> {
    if (this.#woken) {
      this.#woken = false;
      return Promise.resolve();
    }
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.#wakeUp = undefined;
        resolve();
      }, this.#options.pollIntervalMs);
      this.#wakeUp = () => {
        clearTimeout(timer);
        resolve();
      };
    });
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
    this.#closing ??= this.#doClose();
    return this.#closing;
  }

  async #doClose(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#renewer);
    this.wake();
    try {
      // A claim still out gives its deliveries back itself once it returns: wait for that, so
      // they are released before the source (and its connection) goes.
      await this.#claiming?.catch(() => {});
      const buffered = new Set<ManagedDelivery>();
      for (let d = this.#buffer.shift(); d; d = this.#buffer.shift()) buffered.add(d);
      const pending = this.#outstanding.filter((d): d is ManagedDelivery => d !== undefined && !d.settled);
      this.#outstanding.fill(undefined);
      for (const d of pending) {
        d.onSettled = undefined;
        d.abandon();
      }
      await this.#releaseAll(pending.map((d) => [d, !buffered.has(d)]));
    } finally {
      await this.#source.onClose?.();
    }
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
