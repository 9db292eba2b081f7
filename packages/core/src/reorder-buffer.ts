import { positiveInteger } from './validate.js';

/** What moveTo returns when it leaves nothing behind (the common case), without a new array each time. */
const NONE: readonly never[] = Object.freeze([]);

/** What {@link ReorderBuffer.offer} did with an item. */
export type ReorderOutcome = 'held' | 'duplicate' | 'full';

export interface ReorderBufferOptions {
  /** The first sequence number expected (default 1). */
  readonly expected?: number;
  /** Items ahead of the expected one held at most; more are refused as 'full' (default 1,000). */
  readonly maxHeld?: number;
}

/**
 * Puts a stream of numbered items back in order. `offer` keeps an item until its turn; `next`
 * hands out the item whose sequence is the expected one (it stays expected until `advance` says it
 * was processed, so a failed item can be offered again); items below the expected sequence, and a
 * second copy of one already held, are duplicates. The expected item is always accepted; at most
 * `maxHeld` items ahead of it are held.
 */
export class ReorderBuffer<T> {
  #expected: number;
  readonly #maxHeld: number;
  /** Made on the first offer: most buffers of a sequencing lane never hold anything. */
  #held: Map<number, T> | undefined;

  constructor(options: ReorderBufferOptions = {}) {
    this.#expected = positiveInteger(options.expected ?? 1, 'expected');
    this.#maxHeld = positiveInteger(options.maxHeld ?? 1_000, 'maxHeld');
  }

  /** The next sequence number to be processed. */
  get expected(): number {
    return this.#expected;
  }

  /** Items held ahead of the expected one (the expected one, if held, is not counted). */
  get held(): number {
    const held = this.#held;
    return held === undefined ? 0 : held.size - (held.has(this.#expected) ? 1 : 0);
  }

  /** The lowest sequence held, if any. */
  get lowestHeld(): number | undefined {
    let low: number | undefined;
    if (this.#held === undefined) return low;
    for (const seq of this.#held.keys()) if (low === undefined || seq < low) low = seq;
    return low;
  }

  offer(seq: number, item: T): ReorderOutcome {
    if (seq < this.#expected || this.#held?.has(seq)) return 'duplicate';
    if (seq > this.#expected && this.held >= this.#maxHeld) return 'full';
    this.#held ??= new Map();
    this.#held.set(seq, item);
    return 'held';
  }

  /** Takes the expected item out, if it is held. */
  next(): { readonly seq: number; readonly item: T } | undefined {
    const seq = this.#expected;
    const held = this.#held;
    if (held === undefined || !held.has(seq)) return undefined;
    const item = held.get(seq) as T;
    held.delete(seq);
    return { seq, item };
  }

  /**
   * Records that `seq` was processed: the expected sequence moves past it (never back). Returns
   * the held items that are now duplicates (below the new expected sequence).
   */
  advance(seq: number): readonly T[] {
    return this.moveTo(seq + 1);
  }

  /** Moves the expected sequence to `expected` if that is further on; returns held items left behind. */
  moveTo(expected: number): readonly T[] {
    if (expected <= this.#expected) return NONE;
    this.#expected = expected;
    const held = this.#held;
    if (held === undefined || held.size === 0) return NONE;
    const stale: T[] = [];
    for (const [seq, item] of held) {
      if (seq < expected) {
        stale.push(item);
        held.delete(seq);
      }
    }
    return stale;
  }

  /**
   * Gives up waiting for a gap: the expected sequence moves to the lowest held one. Returns the
   * missing range, or undefined when nothing is held or nothing is missing.
   */
  skipGap(): { readonly from: number; readonly to: number } | undefined {
    const low = this.lowestHeld;
    if (low === undefined || low <= this.#expected) return undefined;
    const gap = { from: this.#expected, to: low - 1 };
    this.#expected = low;
    return gap;
  }

  /** Removes the item held for `seq` if it is `item`; resolves whether it was. */
  remove(seq: number, item: T): boolean {
    if (this.#held?.get(seq) !== item) return false;
    this.#held?.delete(seq);
    return true;
  }

  /** Removes and returns every held item (sequence order). */
  drain(): T[] {
    if (this.#held === undefined) return [];
    const items = [...this.#held.entries()].sort((a, b) => a[0] - b[0]).map(([, item]) => item);
    this.#held.clear();
    return items;
  }
}
