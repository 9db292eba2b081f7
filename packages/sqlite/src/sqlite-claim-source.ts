import { randomInt } from 'node:crypto';
import { type ClaimSource, type Clock, ManagedDelivery } from '@agentbus/core';
import { isBusy, toBusError } from './db-errors.js';
import { type LeaseContext, SqliteLease } from './sqlite-lease.js';
import type { ClaimedRow } from './sqlite-store.js';

/** What a claim source needs from its transport. */
export interface ClaimContext extends LeaseContext {
  readonly clock: Clock;
  /** Whether the transport is closing: nothing more is claimed. */
  readonly closed: boolean;
  /** Wakes this process's subscriptions (a released row is ready). */
  wake(): void;
}

/** Leases, from the delivery rows of one group, the deliveries of one PollingSubscription. */
export class SqliteClaimSource implements ClaimSource {
  readonly #ctx: ClaimContext;
  readonly #group: string;
  readonly #ackTimeoutMs: number;
  /** Rows returned by the last claim; while work flows the read-only pre-check is skipped. */
  #lastClaimed = 0;
  readonly onClose: () => void;

  constructor(ctx: ClaimContext, group: string, ackTimeoutMs: number, onClose: () => void) {
    this.#ctx = ctx;
    this.#group = group;
    this.#ackTimeoutMs = ackTimeoutMs;
    this.onClose = onClose;
  }

  /**
   * Claims through the WriteQueue, so that the claims of all local subscriptions, the acks and
   * the publishes of one event-loop turn share a single commit.
   */
  claim(max: number): ManagedDelivery[] | Promise<ManagedDelivery[]> {
    const ctx = this.#ctx;
    if (ctx.closed) return [];
    try {
      // An idle poll must not take the write lock that publishers in other processes need.
      if (this.#lastClaimed === 0 && !ctx.store.hasReady(this.#group, ctx.clock.now())) return [];
    } catch (err) {
      if (isBusy(err)) return [];
      throw toBusError(err, 'claim');
    }
    // A fresh random token per claim: unique enough that a lease lost long ago never matches again.
    const token = randomInt(1, 2 ** 48);
    let rows: ClaimedRow[] = [];
    const claimed = ctx.queue.enqueue((now) => {
      // A claim flushed by close() would only have to be released again.
      rows = ctx.closed ? [] : ctx.store.claim(this.#group, max, now, now + this.#ackTimeoutMs, token);
      return false;
    });
    return claimed.then(
      () => this.#deliveries(rows, token),
      (err: unknown) => {
        this.#lastClaimed = 0;
        // Another process kept the write lock past the busy timeout; the next poll tries again.
        if (isBusy(err)) return [];
        throw err;
      },
    );
  }

  release(delivery: ManagedDelivery, handedOut: boolean): void {
    const lease = delivery.lease;
    if (!(lease instanceof SqliteLease)) return;
    try {
      if (this.#ctx.store.release(lease, this.#ctx.clock.now(), handedOut, delivery.lastError)) this.#ctx.wake();
    } catch {
      // Not released: the lease runs out after ackTimeoutMs and the row is claimable again.
    }
  }

  #deliveries(rows: readonly ClaimedRow[], token: number): ManagedDelivery[] {
    this.#lastClaimed = rows.length;
    return rows.map(
      (r) =>
        new ManagedDelivery(
          r.message,
          this.#group,
          r.attempt,
          new SqliteLease(this.#ctx, this.#group, r.priority, r.seq, token),
          r.lastError,
        ),
    );
  }
}
