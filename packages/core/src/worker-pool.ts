import type { BackoffOptions } from './backoff.js';
import type { Bus, BusSubscription, Handler } from './bus.js';
import { type Clock, systemClock } from './clock.js';
import { ClosedError, ConfigError } from './errors.js';
import { nonNegativeNumber, positiveInteger, positiveNumber } from './validate.js';

export interface AutoscaleOptions {
  readonly min: number;
  readonly max: number;
  /** Workers wanted per this many waiting messages (default 100). */
  readonly backlogPerWorker?: number;
  /** How often the backlog is checked (default 1 s). */
  readonly intervalMs?: number;
  /** Scale down only after the backlog asked for fewer workers this long (default 10 s). */
  readonly scaleDownAfterMs?: number;
}

export interface WorkerPoolOptions<T = unknown> {
  readonly pattern: string;
  readonly handler: Handler<T>;
  /** Consumer group of the workers (default: the pattern). */
  readonly group?: string;
  /** Workers at start (default 1, or autoscale.min). */
  readonly workers?: number;
  /** Handlers at once per worker (default 1). */
  readonly concurrency?: number;
  readonly prefetch?: number;
  readonly maxAttempts?: number;
  readonly ackTimeoutMs?: number;
  readonly backoff?: Partial<BackoffOptions>;
  readonly autoscale?: AutoscaleOptions;
  /** Throughput is averaged over this window (default 10 s). */
  readonly windowMs?: number;
  readonly clock?: Clock;
}

export interface WorkerPoolStats {
  readonly group: string;
  readonly workers: number;
  /** Handlers running now. */
  readonly inFlight: number;
  readonly handled: number;
  readonly failed: number;
  /** Handled per second over the last window. */
  readonly throughputPerS: number;
  /** Messages waiting for the group, where the transport reports it (`groupStats`). */
  readonly backlog?: number | undefined;
}

/**
 * Competing workers on one consumer group that can be scaled at runtime. A worker is one
 * subscription of the group; scaling down closes workers, which drains them: running handlers
 * finish and settle, deliveries they had prefetched but not started go back to the group at once,
 * so nothing is lost and nothing is handled twice. With `autoscale`, the pool sizes itself between
 * `min` and `max` on the group's backlog (transports with `groupStats`).
 */
export class WorkerPool<T = unknown> {
  readonly group: string;
  readonly #bus: Bus;
  readonly #o: WorkerPoolOptions<T>;
  readonly #clock: Clock;
  readonly #windowMs: number;
  readonly #workers: BusSubscription[] = [];
  /** Handled counts per 100 ms bucket within the window, oldest first: [bucket start, count]. */
  readonly #recent: [number, number][] = [];
  #handled = 0;
  #failed = 0;
  #target = 0;
  #scaling: Promise<void> = Promise.resolve();
  #timer: NodeJS.Timeout | undefined;
  #lowSince: number | undefined;
  #closed = false;

  constructor(bus: Bus, options: WorkerPoolOptions<T>) {
    if (typeof options?.handler !== 'function') throw new ConfigError('a handler is required', { path: 'handler' });
    this.#bus = bus;
    this.#o = options;
    this.group = options.group ?? options.pattern;
    this.#clock = options.clock ?? systemClock;
    this.#windowMs = positiveNumber(options.windowMs ?? 10_000, 'windowMs');
    const a = options.autoscale;
    if (a) {
      positiveInteger(a.min, 'autoscale.min');
      positiveInteger(a.max, 'autoscale.max');
      if (a.max < a.min) throw new ConfigError('must be at least autoscale.min', { path: 'autoscale.max' });
      positiveNumber(a.backlogPerWorker ?? 100, 'autoscale.backlogPerWorker');
      positiveNumber(a.intervalMs ?? 1_000, 'autoscale.intervalMs');
      nonNegativeNumber(a.scaleDownAfterMs ?? 10_000, 'autoscale.scaleDownAfterMs');
    }
  }

  /** Starts the initial workers (and the autoscaler). */
  async start(): Promise<this> {
    const a = this.#o.autoscale;
    await this.scale(this.#o.workers ?? a?.min ?? 1);
    if (a) {
      this.#timer = setInterval(() => void this.autoscaleOnce().catch(() => {}), a.intervalMs ?? 1_000);
      this.#timer.unref();
    }
    return this;
  }

  get size(): number {
    return this.#target;
  }

  /** Sets the number of workers; resolves once they run (up) or have drained (down). */
  scale(n: number): Promise<void> {
    if (this.#closed) return Promise.reject(new ClosedError('worker pool is closed'));
    const target = n === 0 ? 0 : positiveInteger(n, 'workers');
    this.#target = target;
    this.#scaling = this.#scaling.then(() => this.#apply(target));
    return this.#scaling;
  }

  async #apply(target: number): Promise<void> {
    while (this.#workers.length < target && !this.#closed) this.#workers.push(await this.#startWorker());
    const extra = this.#workers.splice(target);
    await Promise.all(extra.map((w) => w.close()));
  }

  #startWorker(): Promise<BusSubscription> {
    const o = this.#o;
    const handler = this.#o.handler;
    return this.#bus.subscribe<T>(
      o.pattern,
      async (d) => {
        try {
          await handler(d);
          this.#handled++;
          const bucket = Math.floor(this.#clock.now() / 100) * 100;
          const last = this.#recent.at(-1);
          if (last && last[0] === bucket) last[1]++;
          else {
            this.#recent.push([bucket, 1]);
            if (this.#recent.length > this.#windowMs / 100 + 1) this.#recent.shift();
          }
        } catch (err) {
          this.#failed++;
          throw err;
        }
      },
      {
        group: this.group,
        concurrency: o.concurrency,
        prefetch: o.prefetch,
        maxAttempts: o.maxAttempts,
        ackTimeoutMs: o.ackTimeoutMs,
        backoff: o.backoff,
      },
    );
  }

  /** One autoscaling decision now (the timer calls this every `intervalMs`). Resolves with the size. */
  async autoscaleOnce(): Promise<number> {
    const a = this.#o.autoscale;
    const stats = this.#bus.transport.groupStats;
    if (!a || !stats || this.#closed) return this.#target;
    const { backlog } = await stats.call(this.#bus.transport, this.group);
    const wanted = Math.min(a.max, Math.max(a.min, Math.ceil(backlog / (a.backlogPerWorker ?? 100))));
    const now = this.#clock.now();
    if (wanted > this.#target) {
      this.#lowSince = undefined;
      await this.scale(wanted);
    } else if (wanted < this.#target) {
      this.#lowSince ??= now;
      if (now - this.#lowSince >= (a.scaleDownAfterMs ?? 10_000)) {
        this.#lowSince = undefined;
        await this.scale(wanted);
      }
    } else this.#lowSince = undefined;
    return this.#target;
  }

  async stats(): Promise<WorkerPoolStats> {
    const now = this.#clock.now();
    while (this.#recent.length > 0 && (this.#recent[0] as [number, number])[0] <= now - this.#windowMs) {
      this.#recent.shift();
    }
    const groupStats = this.#bus.transport.groupStats;
    const backlog = groupStats ? (await groupStats.call(this.#bus.transport, this.group)).backlog : undefined;
    return {
      group: this.group,
      workers: this.#workers.length,
      inFlight: this.#workers.reduce((s, w) => s + w.inFlight, 0),
      handled: this.#handled,
      failed: this.#failed,
      throughputPerS: (this.#recent.reduce((sum, [, c]) => sum + c, 0) * 1_000) / this.#windowMs,
      backlog,
    };
  }

  /** Drains every worker and stops the autoscaler. */
  async close(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    if (this.#closed) return this.#scaling;
    await this.scale(0);
    this.#closed = true;
  }
}

/** Starts a pool of competing workers on `options.pattern` (see {@link WorkerPool}). */
export function workerPool<T = unknown>(bus: Bus, options: WorkerPoolOptions<T>): Promise<WorkerPool<T>> {
  return new WorkerPool<T>(bus, options).start();
}
