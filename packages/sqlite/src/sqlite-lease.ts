import type { DeadLetterOptions, IdGenerator, LeaseOps, NackOptions } from '@agentbus/core';
import type { LeaseKey, SqliteStore } from './sqlite-store.js';
import type { WriteQueue } from './write-queue.js';

/** A NaN would be stored as NULL and fail the write batch; Infinity would not be an integer. */
function nonNegative(ms: number): number {
  return ms > 0 ? Math.min(ms, 2 ** 52) : 0;
}

/** What a lease needs from its transport. */
export interface LeaseContext {
  readonly store: SqliteStore;
  readonly queue: WriteQueue;
  readonly ids: IdGenerator;
}

/**
 * The backend side of one claimed delivery. Every operation is batched through the WriteQueue
 * and only takes effect while the row still carries this lease's token: once the lease ran out
 * and another consumer claimed the row, a late ack or nack changes nothing.
 */
export class SqliteLease implements LeaseOps, LeaseKey {
  readonly #ctx: LeaseContext;

  constructor(
    ctx: LeaseContext,
    readonly group: string,
    readonly priority: number,
    readonly seq: number,
    readonly token: number,
  ) {
    this.#ctx = ctx;
  }

  ack(): Promise<void> {
    return this.#ctx.queue.enqueue(() => {
      this.#ctx.store.ack(this);
      return false;
    });
  }

  nack({ delayMs = 0, error }: NackOptions): Promise<void> {
    const delay = nonNegative(delayMs);
    // Only an immediate redelivery is worth waking local consumers for; delayed rows are found by the poll.
    return this.#ctx.queue.enqueue((now) => this.#ctx.store.nack(this, now + delay, error) && delay === 0);
  }

  deadLetter(reason: string, { error }: DeadLetterOptions): Promise<void> {
    const id = this.#ctx.ids();
    const why = String(reason);
    const text = error === undefined ? undefined : String(error);
    return this.#ctx.queue.enqueue((now) => {
      this.#ctx.store.bury(this, id, why, text, now);
      return false;
    });
  }

  extend(ms: number): Promise<void> {
    const by = nonNegative(ms);
    return this.#ctx.queue.enqueue((now) => {
      this.#ctx.store.extend(this, now + by);
      return false;
    });
  }
}
