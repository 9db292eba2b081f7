import type { RawDelivery, Subscription } from '@agentbus/core';

/** Polls `condition` until it holds or `timeoutMs` passes (then throws with `what`). */
export async function until(
  condition: () => boolean | Promise<boolean>,
  timeoutMs = 10_000,
  what = 'condition',
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await condition()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/**
 * Reads a subscription with timeouts. A timed-out read stays pending and is picked up by the next
 * call, so no delivery is lost between reads.
 */
export class Reader {
  readonly #it: AsyncIterator<RawDelivery>;
  #pending: Promise<IteratorResult<RawDelivery>> | undefined;

  constructor(readonly subscription: Subscription<RawDelivery>) {
    this.#it = subscription[Symbol.asyncIterator]();
  }

  /** The next delivery, or undefined if none arrived within `timeoutMs`. */
  async take(timeoutMs: number): Promise<RawDelivery | undefined> {
    this.#pending ??= this.#it.next();
    const pending = this.#pending;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((r) => {
      timer = setTimeout(() => r('timeout'), timeoutMs);
    });
    const r = await Promise.race([pending, timeout]);
    clearTimeout(timer);
    if (r === 'timeout') return undefined;
    this.#pending = undefined;
    return r.done ? undefined : r.value;
  }

  /** The next delivery; throws if none arrives within `timeoutMs`. */
  async expect(timeoutMs = 10_000): Promise<RawDelivery> {
    const d = await this.take(timeoutMs);
    if (!d) throw new Error(`no delivery within ${timeoutMs} ms`);
    return d;
  }

  /** Exactly `n` deliveries (throws on timeout). */
  async expectMany(n: number, timeoutMs = 10_000): Promise<RawDelivery[]> {
    const out: RawDelivery[] = [];
    const deadline = Date.now() + timeoutMs;
    while (out.length < n) {
      const d = await this.take(Math.max(1, deadline - Date.now()));
      if (!d) throw new Error(`got ${out.length} of ${n} deliveries within ${timeoutMs} ms`);
      out.push(d);
    }
    return out;
  }

  /** Asserts that nothing is delivered for `quietMs` (an observation window, not a wait for work). */
  async expectNothing(quietMs: number): Promise<void> {
    const d = await this.take(quietMs);
    if (d) throw new Error(`unexpected delivery of ${d.message.id} (attempt ${d.attempt}) on ${d.message.topic}`);
  }

  close(): Promise<void> {
    return this.subscription.close();
  }
}

/** The first delivery on any of `readers`, with the index of the reader that got it. */
export async function firstOf(
  readers: Reader[],
  timeoutMs = 10_000,
): Promise<{ delivery: RawDelivery; index: number }> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    for (const [index, r] of readers.entries()) {
      const delivery = await r.take(5);
      if (delivery) return { delivery, index };
    }
  }
  throw new Error(`no delivery on any of ${readers.length} readers within ${timeoutMs} ms`);
}
