import type { BenchChannel, BenchSubject, Consumers } from './bench-subject.js';

interface Item {
  readonly t: number;
  readonly body: Buffer;
}

/**
 * The floor for `memory:`: a plain array queue, producers push, async consumers take up to
 * `concurrency` items at a time and await a handler for each. No envelopes, leases or acks.
 */
class ArrayQueue {
  #items: (Item | undefined)[] = [];
  #head = 0;
  #waiters: (() => void)[] = [];

  push(item: Item): void {
    this.#items.push(item);
  }

  /** Wakes every consumer waiting for items. */
  notify(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w();
  }

  take(max: number): Item[] {
    const end = Math.min(this.#items.length, this.#head + max);
    const out = this.#items.slice(this.#head, end) as Item[];
    this.#head = end;
    if (this.#head === this.#items.length) {
      this.#items = [];
      this.#head = 0;
    }
    return out;
  }

  waitForItems(): Promise<void> {
    return new Promise((resolve) => this.#waiters.push(resolve));
  }
}

/** The in-process array queue `memory:` is compared with. */
export class RawMemorySubject implements BenchSubject {
  readonly label = 'raw array queue';
  readonly #body: Buffer;

  constructor(
    size: number,
    private readonly concurrency: number,
  ) {
    this.#body = Buffer.alloc(size, 'x');
  }

  async channel(): Promise<BenchChannel> {
    const queue = new ArrayQueue();
    const body = this.#body;
    const { concurrency } = this;
    return {
      async publishBatch(count) {
        const t = performance.now();
        for (let i = 0; i < count; i++) queue.push({ t, body });
        queue.notify();
      },
      async publishOne(sentAtMs) {
        queue.push({ t: sentAtMs, body });
        queue.notify();
      },
      async consume(consumers, onMessage): Promise<Consumers> {
        let stopped = false;
        const handle = async (item: Item) => onMessage(item.t);
        const loop = async () => {
          while (!stopped) {
            const batch = queue.take(concurrency);
            if (batch.length === 0) await queue.waitForItems();
            else await Promise.all(batch.map(handle));
          }
        };
        const loops = Array.from({ length: consumers }, loop);
        return {
          stop: async () => {
            stopped = true;
            queue.notify();
            await Promise.all(loops);
          },
        };
      },
    };
  }

  async close(): Promise<void> {}
}
