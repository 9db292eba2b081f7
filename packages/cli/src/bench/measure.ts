import { TimeoutError } from '@agentbus/core';

/** The value at quantile `q` (0–1) of `sorted` (ascending), nearest-rank. */
export function quantile(sorted: ArrayLike<number>, q: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.ceil(q * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))] as number;
}

/** Samples resident set size on a timer and at explicit points; reports the peak. */
export class RssSampler {
  #peak = 0;
  #timer: NodeJS.Timeout | undefined;

  start(intervalMs: number): this {
    this.sample();
    this.#timer = setInterval(() => this.sample(), intervalMs);
    // Sampling must never keep the process alive.
    this.#timer.unref();
    return this;
  }

  sample(): void {
    const rss = process.memoryUsage.rss();
    if (rss > this.#peak) this.#peak = rss;
  }

  /** Stops sampling and returns the peak in MiB. */
  stop(): number {
    this.sample();
    clearInterval(this.#timer);
    return this.#peak / (1024 * 1024);
  }
}

/**
 * Counts handled messages towards `target` and resolves `done` with the `performance.now()`
 * stamp of the last one, or rejects with TimeoutError after `timeoutMs`.
 */
export class Countdown {
  readonly done: Promise<number>;
  #left: number;
  #resolve!: (lastMs: number) => void;
  #timer: NodeJS.Timeout;

  readonly #signal: AbortSignal | undefined;
  readonly #onAbort: () => void;

  constructor(target: number, timeoutMs: number, what: string, signal?: AbortSignal) {
    this.#left = target;
    let reject!: (err: unknown) => void;
    this.done = new Promise<number>((resolve, rej) => {
      this.#resolve = resolve;
      reject = rej;
    });
    this.#timer = setTimeout(() => {
      reject(new TimeoutError(`${what}: ${this.#left} of ${target} messages still unhandled after ${timeoutMs} ms`));
    }, timeoutMs);
    this.#signal = signal;
    this.#onAbort = () => reject(signal?.reason);
    signal?.addEventListener('abort', this.#onAbort, { once: true });
    // Observed here so an abandoned countdown (its phase failed first) is no unhandled rejection.
    this.done.catch(() => {});
    if (target === 0) this.#finish();
  }

  /** Stops the deadline timer (the phase ended some other way). */
  dispose(): void {
    clearTimeout(this.#timer);
    this.#signal?.removeEventListener('abort', this.#onAbort);
  }

  tick(): void {
    if (--this.#left === 0) this.#finish();
  }

  #finish(): void {
    this.dispose();
    this.#resolve(performance.now());
  }
}

/** Publishes `total` messages in batches of `batchSize`, with `inflight` batches at a time. */
export async function pump(
  publishBatch: (count: number) => Promise<void>,
  total: number,
  batchSize: number,
  inflight: number,
  signal?: AbortSignal,
): Promise<void> {
  let next = 0;
  const lane = async () => {
    while (next < total) {
      signal?.throwIfAborted();
      const n = Math.min(batchSize, total - next);
      next += n;
      await publishBatch(n);
    }
  };
  await Promise.all(Array.from({ length: inflight }, lane));
}

/**
 * Offers `total` single publishes at `ratePerS`, on schedule: message i is sent at
 * start + i / rate. Timers fire at ~1 ms granularity, so at high rates the messages due in
 * one tick go out back to back. Resolves when every publish resolved; rejects on the first
 * failed publish.
 */
export async function offerAtRate(
  publishOne: (sentAtMs: number) => Promise<void>,
  total: number,
  ratePerS: number,
  signal?: AbortSignal,
): Promise<void> {
  const start = performance.now();
  const pending: Promise<void>[] = [];
  // Caught at once: a rejection left unobserved until the end would be an unhandled rejection.
  let failure: { err: unknown } | undefined;
  const fail = (err: unknown) => {
    failure ??= { err };
  };
  let sent = 0;
  while (sent < total && !failure) {
    if (signal?.aborted) fail(signal.reason);
    const due = Math.min(total, Math.floor(((performance.now() - start) * ratePerS) / 1000) + 1);
    while (sent < due) {
      pending.push(publishOne(performance.now()).catch(fail));
      sent++;
    }
    if (sent < total) {
      const waitMs = start + (sent * 1000) / ratePerS - performance.now();
      await new Promise((r) => setTimeout(r, Math.max(0, waitMs)));
    }
  }
  await Promise.all(pending);
  if (failure) throw failure.err;
}
