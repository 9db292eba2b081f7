import {
  type DeadLetterOptions,
  type InboundMessage,
  LAST_ERROR_MAX_BYTES,
  type NackOptions,
  type RawDelivery,
} from './transport.js';

/**
 * The promise a settle returns when the backend finished synchronously (memory transport,
 * an ack batched for later): callers may compare against it to skip a microtask.
 */
export const SETTLED_SYNC: Promise<void> = Promise.resolve();
const RESOLVED = SETTLED_SYNC;

/** UTF-8 length of one code point (a lone surrogate is written as U+FFFD: 3 bytes). */
function utf8Length(codePoint: number): number {
  return codePoint < 0x80 ? 1 : codePoint < 0x800 ? 2 : codePoint < 0x10000 ? 3 : 4;
}

/**
 * `text` cut to at most `maxBytes` UTF-8 bytes (never inside a character), ending with `…` when it
 * was cut. For transport authors storing a nack's error as the next delivery's `lastError`.
 */
export function truncateLastError(text: string, maxBytes: number = LAST_ERROR_MAX_BYTES): string {
  // No UTF-16 code unit takes more than 3 UTF-8 bytes: short texts need no counting.
  if (text.length * 3 <= maxBytes) return text;
  const budget = Math.max(0, maxBytes - 3); // room for the ellipsis (3 bytes)
  let bytes = 0;
  let cut = -1;
  for (let i = 0; i < text.length; ) {
    const cp = text.codePointAt(i) as number;
    bytes += utf8Length(cp);
    if (cut < 0 && bytes > budget) cut = i;
    if (bytes > maxBytes) return `${text.slice(0, cut)}…`;
    i += cp > 0xffff ? 2 : 1;
  }
  return text;
}

/** The backend operations behind one leased delivery. */
export interface LeaseOps {
  ack(): Promise<void> | void;
  /** `options.error`, when given, is already cut by {@link truncateLastError}. */
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
    /** The error of the nack that caused this redelivery (see RawDelivery.lastError). */
    readonly lastError?: string | undefined,
  ) {}

  get settled(): boolean {
    return this.#settled;
  }

  ack(): Promise<void> {
    return this.#settle(() => this.lease.ack());
  }

  nack(options: NackOptions = {}): Promise<void> {
    const { error } = options;
    // Cut here once for every backend; a non-string error (from untyped callers) becomes text.
    const bounded =
      error === undefined || (typeof error === 'string' && error.length * 3 <= LAST_ERROR_MAX_BYTES)
        ? options
        : { ...options, error: truncateLastError(String(error)) };
    return this.#settle(() => this.lease.nack(bounded));
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
