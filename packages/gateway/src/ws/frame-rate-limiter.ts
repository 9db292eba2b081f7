/**
 * A token bucket for the frames of one connection: `burst` frames at once, refilled at
 * `ratePerSecond`. Synchronous and allocation-free per frame.
 */
export class FrameRateLimiter {
  readonly #ratePerMs: number;
  readonly #burst: number;
  readonly #now: () => number;
  #tokens: number;
  #lastMs: number;

  constructor(ratePerSecond: number, burst: number, now: () => number = Date.now) {
    this.#ratePerMs = ratePerSecond / 1000;
    this.#burst = burst;
    this.#now = now;
    this.#tokens = burst;
    this.#lastMs = now();
  }

  /** Takes one token: 0 when allowed, otherwise how long until one is available (ms, >= 1). */
  take(): number {
    const now = this.#now();
    this.#tokens = Math.min(this.#burst, this.#tokens + (now - this.#lastMs) * this.#ratePerMs);
    this.#lastMs = now;
    if (this.#tokens >= 1) {
      this.#tokens -= 1;
      return 0;
    }
    return Math.max(1, Math.ceil((1 - this.#tokens) / this.#ratePerMs));
  }
}
