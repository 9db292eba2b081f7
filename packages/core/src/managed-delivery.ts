import type { DeadLetterOptions, InboundMessage, NackOptions, RawDelivery } from './transport.js';

/** The backend operations behind one leased delivery. */
export interface LeaseOps {
  ack(): Promise<void> | void;
  nack(options: NackOptions): Promise<void> | void;
  deadLetter(reason: string, options: DeadLetterOptions): Promise<void> | void;
  extend(ms: number): Promise<void> | void;
}

/**
 * A RawDelivery whose settlement is idempotent (the first call wins) and observable, for
 * transport authors. `onSettled` fires once, after the backend operation finished or failed.
 */
export class ManagedDelivery implements RawDelivery {
  #settled = false;
  /** Set by the subscription that hands the delivery out. */
  onSettled: (() => void) | undefined;

  constructor(
    readonly message: InboundMessage,
    readonly group: string,
    readonly attempt: number,
    private readonly ops: LeaseOps,
  ) {}

  get settled(): boolean {
    return this.#settled;
  }

  ack(): Promise<void> {
    return this.#settle(() => this.ops.ack());
  }

  nack(options: NackOptions = {}): Promise<void> {
    return this.#settle(() => this.ops.nack(options));
  }

  deadLetter(reason: string, options: DeadLetterOptions = {}): Promise<void> {
    return this.#settle(() => this.ops.deadLetter(reason, options));
  }

  async extend(ms: number): Promise<void> {
    if (!this.#settled) await this.ops.extend(ms);
  }

  /** Marks the delivery settled without touching the backend (its lease was released or lost). */
  abandon(): void {
    if (this.#settled) return;
    this.#settled = true;
    this.onSettled?.();
  }

  async #settle(op: () => Promise<void> | void): Promise<void> {
    if (this.#settled) return;
    this.#settled = true;
    try {
      await op();
    } finally {
      this.onSettled?.();
    }
  }
}
