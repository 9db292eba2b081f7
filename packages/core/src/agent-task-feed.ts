import { taskTopics } from './agent-task-model.js';
import type { Bus, BusSubscription } from './bus.js';
import type { Logger } from './logger.js';

/** The envelope type of a nudge. */
export const TASK_NUDGE_TYPE = 'agentbus.task.updated';
/** A nudge nobody received within this time is worthless: followers poll the store anyway. */
const NUDGE_TTL_MS = 60_000;

/**
 * Wake-ups of one follower of a task: a poke (a nudge came), the poll interval, or an abort. A
 * poke while the follower is busy reading is kept, so the next wait returns at once: none is lost.
 */
export class Waker {
  #poked = false;
  #wake: (() => void) | undefined;

  poke(): void {
    this.#poked = true;
    this.#wake?.();
  }

  /** Resolves at the next poke (at once if one came since the last wait), after `ms`, or when `signal` aborts. */
  wait(ms: number, signal: AbortSignal): Promise<void> {
    if (this.#poked || signal.aborted) {
      this.#poked = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        this.#wake = undefined;
        this.#poked = false;
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal.addEventListener('abort', done, { once: true });
      this.#wake = done;
    });
  }
}

interface Watch {
  readonly pokes: Set<() => void>;
  readonly sub: Promise<BusSubscription>;
}

const byBus = new WeakMap<Bus, TaskNudges>();

/**
 * The bus side of following tasks: whoever appends to a task stream publishes a nudge on
 * `_task.<id>`; followers in this process share one ephemeral subscription per task and bus, and
 * the appends made through this bus poke them directly as well. The store stays the truth: a nudge
 * only says "read again", so a lost one costs at most a poll interval.
 */
export class TaskNudges {
  readonly #bus: Bus;
  readonly #watches = new Map<string, Watch>();

  private constructor(bus: Bus) {
    this.#bus = bus;
  }

  /** The nudges of `bus` (one per bus, shared by its task servers and clients). */
  static of(bus: Bus): TaskNudges {
    let n = byBus.get(bus);
    if (!n) {
      n = new TaskNudges(bus);
      byBus.set(bus, n);
    }
    return n;
  }

  /**
   * Calls `poke` whenever the task may have new updates. Resolves once the subscription is in place
   * (read the store after that, so nothing falls in between) with the function that stops it.
   */
  async watch(taskId: string, poke: () => void): Promise<() => Promise<void>> {
    let w = this.#watches.get(taskId);
    if (!w) {
      const pokes = new Set<() => void>();
      const topic = taskTopics.updates(taskId);
      const sub = this.#bus.subscribe(
        topic,
        () => {
          for (const p of pokes) p();
        },
        { group: `${topic}.${this.#bus.ids()}`, ephemeral: true, maxAttempts: 1 },
      );
      const watch: Watch = { pokes, sub };
      w = watch;
      this.#watches.set(taskId, watch);
      sub.catch(() => {
        if (this.#watches.get(taskId) === watch) this.#watches.delete(taskId);
      });
    }
    const watch = w;
    watch.pokes.add(poke);
    try {
      await watch.sub;
    } catch (err) {
      watch.pokes.delete(poke);
      throw err;
    }
    let stopped = false;
    return async () => {
      if (stopped) return;
      stopped = true;
      watch.pokes.delete(poke);
      if (watch.pokes.size > 0 || this.#watches.get(taskId) !== watch) return;
      this.#watches.delete(taskId);
      const sub = await watch.sub.catch(() => undefined);
      await sub?.close();
    };
  }

  /** Tells the followers of a task that it is at `version` now. Never rejects: a failed nudge is logged. */
  async notify(taskId: string, version: number, logger: Logger): Promise<void> {
    for (const poke of this.#watches.get(taskId)?.pokes ?? []) poke();
    try {
      await this.#bus.publish(
        taskTopics.updates(taskId),
        { taskId, version },
        { type: TASK_NUDGE_TYPE, ttlMs: NUDGE_TTL_MS },
      );
    } catch (err) {
      logger.warn({ err, taskId, version }, 'task nudge not published; followers will see the update when they poll');
    }
  }
}
