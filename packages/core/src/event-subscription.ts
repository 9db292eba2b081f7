import { ClosedError, isRetryable } from './errors.js';
import type { EventHandler, EventStoreEngine, EventSubscription } from './event-store.js';
import type { Logger } from './logger.js';

/** The parts of a store its subscriptions use. */
export interface SubscriptionHost {
  readonly engine: EventStoreEngine;
  readonly batchSize: number;
  readonly pollIntervalMs: number;
  readonly logger: Logger;
  /** Counts appends made through this store: a subscription that saw it change does not wait. */
  appendCount(): number;
  /** Resolves at the next append through this store, or when `signal` aborts. */
  nextAppend(signal: AbortSignal): Promise<void>;
}

/** Longest wait between read attempts after the backend failed. */
const MAX_RETRY_DELAY_MS = 5_000;

/**
 * The loop behind `EventStore.subscribeAll`: reads pages from a position, hands each event to the
 * handler, and once caught up waits for an append (this store's notifier, the engine's
 * notification, or the poll interval) before it reads again.
 */
export class AllSubscription implements EventSubscription {
  readonly done: Promise<void>;
  #position = 0;
  #stopping = false;
  readonly #abort = new AbortController();
  #closing: Promise<void> | undefined;

  constructor(
    private readonly host: SubscriptionHost,
    private readonly handler: EventHandler,
    from: number | 'end',
    private readonly onCaughtUp: ((position: number) => unknown) | undefined,
    private readonly onClosed: () => void,
  ) {
    if (from !== 'end') this.#position = from - 1;
    this.done = this.#run(from).finally(() => {
      this.#stopping = true;
      this.onClosed();
    });
    // The caller may never look at `done`: its rejection is logged, not left unhandled.
    this.done.catch(() => {});
  }

  get position(): number {
    return this.#position;
  }

  async #run(from: number | 'end'): Promise<void> {
    const { engine, batchSize, logger } = this.host;
    if (from === 'end') {
      const head = await this.#retrying(() => engine.head());
      if (head === undefined) return;
      this.#position = head;
    }
    // Fire onCaughtUp at the first catch-up, then only after events were handled.
    let handled = true;
    while (!this.#stopping) {
      const appendsBefore = this.host.appendCount();
      const page = await this.#retrying(() => engine.readAll(this.#position + 1, batchSize));
      if (page === undefined) return;
      for (const event of page) {
        if (this.#stopping) return;
        try {
          await this.handler(event);
        } catch (err) {
          // A handler cut short by close (ClosedError) ends the subscription cleanly.
          if (this.#stopping && err instanceof ClosedError) return;
          logger.error(
            { err, position: event.position, streamId: event.streamId },
            'event handler failed; subscription stopped',
          );
          throw err;
        }
        this.#position = event.position;
        handled = true;
      }
      if (page.length === batchSize) continue;
      if (handled && this.onCaughtUp && !this.#stopping) await this.onCaughtUp(this.#position);
      handled = false;
      if (this.host.appendCount() === appendsBefore) await this.#waitForAppend();
    }
  }

  /** Runs a read, retrying retryable failures with backoff until it succeeds or the subscription stops. */
  async #retrying<R>(read: () => Promise<R>): Promise<R | undefined> {
    let failures = 0;
    for (;;) {
      if (this.#stopping) return undefined;
      try {
        return await read();
      } catch (err) {
        if (this.#stopping) return undefined;
        if (!isRetryable(err)) throw err;
        const delayMs = Math.min(MAX_RETRY_DELAY_MS, 100 * 2 ** failures++);
        this.host.logger.warn({ err, delayMs }, 'event store read failed; retrying');
        await this.#sleep(delayMs);
      }
    }
  }

  #waitForAppend(): Promise<void> {
    const { engine, pollIntervalMs } = this.host;
    if (this.#abort.signal.aborted) return Promise.resolve();
    const round = new AbortController();
    const stop = () => round.abort();
    this.#abort.signal.addEventListener('abort', stop, { once: true });
    const waits = [this.host.nextAppend(round.signal)];
    waits.push(
      engine.waitForAppend
        ? engine.waitForAppend(this.#position, round.signal).catch(() => this.#sleep(pollIntervalMs, round.signal))
        : this.#sleep(pollIntervalMs, round.signal),
    );
    return Promise.race(waits).finally(() => {
      round.abort();
      this.#abort.signal.removeEventListener('abort', stop);
    });
  }

  #sleep(ms: number, signal: AbortSignal = this.#abort.signal): Promise<void> {
    return new Promise((resolve) => {
      if (signal.aborted) return resolve();
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal.addEventListener('abort', done, { once: true });
    });
  }

  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#stopping = true;
      this.#abort.abort();
      await this.done.catch(() => {});
    })();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
