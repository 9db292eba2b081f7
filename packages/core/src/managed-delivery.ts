import type { DeadLetterOptions, InboundMessage, NackOptions, RawDelivery } from './transport.js';

/**
 * The promise a settle returns when the backend finished synchronously (memory transport,
 * an ack batched for later): callers may compare against it to skip a microtask.
 */
export const SETTLED_SYNC: Promise<void> = Promise.resolve();
const RESOLVED = SETTLED_SYNC;

/** The backend operations behind one leased delivery. */
export interface LeaseOps {
  ack(): Promise<void> | void;
  nack(options: NackOptions): Promise<void> | void;
  deadLetter(reason: string, options: DeadLetterOptions): Promise<void> | void;
  extend(ms: number): Promise<void> | void;
}

/**
 * A RawDelivery whose settlement is idempotent (the first call wins) and observable, for
 * transport authors. `onSettled` fires once, when the settle is issued (the backend operation may
 * still be in flight; its promise is what ack/nack/deadLetter return).
 */
export class ManagedDelivery implements RawDelivery {
  #settled = false;
  /** Set by the subscription that hands the delivery out. */
  onSettled: ((delivery: ManagedDelivery) => void) | undefined;
  /** Bookkeeping slot of the subscription that holds the delivery. */
  slot = -1;

  constructor(
    readonly message: InboundMessage,
    readonly group: string,
    readonly attempt: number,
    /** The backend side of this delivery's lease. */
    readonly lease: LeaseOps,
  ) {}

  get settled(): boolean {
    return this.#settled;
  }

  ack(): Promise<void> {
    return this.#settle(() => this.lease.ack());
  }

  nack(options: NackOptions = {}): Promise<void> {
    return this.#settle(() => this.lease.nack(options));
  }

  deadLetter(reason: string, options: DeadLetterOptions = {}): Promise<void> {
    return this.#settle(() => this.lease.deadLetter(reason, options));
  }

  async extend(ms: number): Promise<void> {
    if (!this.#settled) await this.lease.extend(ms);
  }

  /** Marks the delivery settled without touching the backend (its lease was released or lost). */
  abandon(): void {
    if (this.#settled) return;
    this.#settled = true;
    this.onSettled?.(this);
  }

  // Not async: memory and batched backends settle synchronously, and the hot path should not
  // pay for an extra promise per message.
  #settle(op: () => Promise<void> | void): Promise<void> {
    if (this.#settled) return RESOLVED;
    this.#settled = true;
    let result: Promise<void> | void;
    try {
      result = op();
    } catch (err) {
      result = Promise.reject(err);
    }
    // As soon as the settle is issued, not when the backend confirmed it: the subscription's
    // next claim then joins the same write batch as this ack (one commit, full-size claims).
    // Should the backend operation fail, the lease runs out and the message is redelivered.
    this.onSettled?.(this);
    return result instanceof Promise ? result : RESOLVED;
  }
}
