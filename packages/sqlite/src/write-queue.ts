import { type Clock, ClosedError } from '@agentbus/core';
import { isBusy, toBusError } from './db-errors.js';
import type { BatchOp, SqliteStore } from './sqlite-store.js';

interface Pending {
  readonly op: BatchOp;
  readonly resolve: () => void;
  readonly reject: (err: unknown) => void;
}

/**
 * Collects the writes (publishes, claims, acks, nacks, dead-letters, lease extensions) made
 * during one turn of the event loop and commits them in a single IMMEDIATE transaction. Every
 * commit costs a WAL write of the pages it dirtied, so one commit per turn instead of one per
 * call is what makes publishing and acking cheap. Each promise resolves once its batch committed.
 */
export class WriteQueue {
  readonly #store: SqliteStore;
  readonly #clock: Clock;
  /** Called after a commit that made rows claimable (a publish, a nack without delay). */
  readonly #onReady: () => void;
  #pending: Pending[] = [];
  #scheduled: NodeJS.Immediate | undefined;
  #closed = false;

  constructor(store: SqliteStore, clock: Clock, onReady: () => void) {
    this.#store = store;
    this.#clock = clock;
    this.#onReady = onReady;
  }

  /**
   * Queues `op` for the next flush, where it runs inside the batch's transaction. Should it
   * throw, the batch is rolled back and its operations are retried one per transaction, so that
   * only the failing one rejects.
   */
  enqueue(op: BatchOp): Promise<void> {
    if (this.#closed) return Promise.reject(new ClosedError('transport is closed'));
    return new Promise<void>((resolve, reject) => {
      this.#pending.push({ op, resolve, reject });
      // setImmediate (not a microtask) lets the writes of a whole I/O turn join the batch.
      this.#scheduled ??= setImmediate(() => this.flush());
    });
  }

  /** Commits everything queued now. */
  flush(): void {
    if (this.#scheduled) clearImmediate(this.#scheduled);
    this.#scheduled = undefined;
    const batch = this.#pending;
    if (batch.length === 0) return;
    this.#pending = [];
    let ready = false;
    try {
      ready = this.#store.runBatch(
        batch.map((p) => p.op),
        this.#clock.now(),
      );
      for (const p of batch) p.resolve();
    } catch (err) {
      if (batch.length === 1 || isBusy(err)) {
        // Nothing was committed; unsettled leases run out and their messages are redelivered.
        const error = toBusError(err, 'write');
        for (const p of batch) p.reject(error);
        return;
      }
      // Not a lock problem, so possibly one bad operation: commit the others one by one, so it fails alone.
      ready = this.#runEach(batch);
    }
    if (ready) this.#onReady();
  }

  #runEach(batch: readonly Pending[]): boolean {
    let ready = false;
    for (const p of batch) {
      try {
        if (this.#store.runBatch([p.op], this.#clock.now())) ready = true;
        p.resolve();
      } catch (err) {
        p.reject(toBusError(err, 'write'));
      }
    }
    return ready;
  }

  /** Commits what is queued; later operations reject with ClosedError. */
  close(): void {
    this.flush();
    this.#closed = true;
  }
}
