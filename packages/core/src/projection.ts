import type { CheckpointStore } from './checkpoint-store.js';
import { ClosedError, ConfigError, TimeoutError } from './errors.js';
import type { EventHandler, EventStore, EventSubscription, StoredEvent } from './event-store.js';
import { type Logger, stderrLogger } from './logger.js';
import { positiveInteger } from './validate.js';

export interface ProjectionOptions<T = unknown> {
  readonly store: EventStore;
  /** Names the checkpoint: a restarted projection of the same name resumes where it left off. */
  readonly name: string;
  readonly checkpoints: CheckpointStore;
  /** Applies one event (to a read model, a side effect …). Throwing stops the projection. */
  readonly handle: EventHandler<T>;
  /**
   * Save the checkpoint after this many handled events (default 1: after every one). It is also
   * saved whenever the projection has caught up and when it stops. A larger number means fewer
   * writes and, after a crash, up to that many events handled again.
   */
  readonly checkpointEvery?: number;
  readonly logger?: Logger;
}

export const PROJECTION_DEFAULTS = Object.freeze({ checkpointEvery: 1 });

/** A running projection (see {@link projection}). */
export interface Projection extends AsyncDisposable {
  readonly name: string;
  /** Position of the last event handled (the checkpoint it started from until it handles one). */
  readonly position: number;
  /**
   * Resolves once the projection has handled every event up to `position` (e.g. an append's
   * `position`, to read your own writes). Rejects if it stops first, or with TimeoutError after `timeoutMs`.
   */
  waitFor(position: number, timeoutMs?: number): Promise<void>;
  /** Settles when the projection stops: resolves after `stop()`, rejects with the error that stopped it. */
  readonly done: Promise<void>;
  /** Stops after the running handler, saves the checkpoint. Idempotent; never rejects. */
  stop(): Promise<void>;
}

interface Waiter {
  readonly position: number;
  readonly resolve: () => void;
  readonly reject: (err: unknown) => void;
}

/**
 * Runs `handle` for every event of the store in position order, from the position after its saved
 * checkpoint, then live. The checkpoint is written after the handler (see `checkpointEvery`), so
 * processing is at-least-once: an event handled just before a crash, whose checkpoint was not yet
 * saved, is handled again on restart — make the handler idempotent (or store the read model and the
 * checkpoint in one transaction). Events whose checkpoint was saved are never handled again.
 * A handler that throws stops the projection at the event before it (`done` rejects); starting it
 * again retries that event. Run one instance per name: two would both handle every event.
 */
export function projection<T = unknown>(options: ProjectionOptions<T>): Projection {
  const { store, name, checkpoints, handle } = options;
  if (typeof name !== 'string' || name === '') throw new ConfigError('must be a non-empty string', { path: 'name' });
  if (typeof handle !== 'function') throw new ConfigError('a handler function is required', { path: 'handle' });
  if (typeof checkpoints?.load !== 'function')
    throw new ConfigError('a CheckpointStore is required', { path: 'checkpoints' });
  if (typeof store?.subscribeAll !== 'function') throw new ConfigError('an EventStore is required', { path: 'store' });
  const every = positiveInteger(options.checkpointEvery ?? PROJECTION_DEFAULTS.checkpointEvery, 'checkpointEvery');
  const logger = options.logger ?? stderrLogger;

  let position = 0;
  let saved = 0;
  let sinceSave = 0;
  let stopping = false;
  let stopped: { error?: unknown } | undefined;
  let subscription: EventSubscription | undefined;
  const waiters = new Set<Waiter>();

  const save = async () => {
    if (position === saved) return;
    const at = position;
    await checkpoints.save(name, at);
    saved = at;
    sinceSave = 0;
  };
  const settleWaiters = () => {
    for (const w of waiters) {
      if (position >= w.position) w.resolve();
      else if (stopped) w.reject(stopped.error ?? new ClosedError(`projection ${name} stopped at ${position}`));
    }
  };

  const run = async () => {
    saved = position = await checkpoints.load(name);
    if (stopping) return;
    subscription = store.subscribeAll<T>(
      async (event: StoredEvent<T>) => {
        await handle(event);
        position = event.position;
        if (++sinceSave >= every) await save();
        settleWaiters();
      },
      { fromPosition: position + 1, onCaughtUp: save },
    );
    try {
      await subscription.done;
    } finally {
      // Keep what was handled, also when a handler failed.
      await save().catch((err: unknown) => logger.error({ err, projection: name }, 'saving the checkpoint failed'));
    }
  };

  const done = run().then(
    () => {
      stopped = {};
      settleWaiters();
    },
    (error: unknown) => {
      stopped = { error };
      logger.error({ err: error, projection: name, position }, 'projection stopped');
      settleWaiters();
      throw error;
    },
  );
  done.catch(() => {});

  let stopping$: Promise<void> | undefined;
  const self: Projection = {
    name,
    get position() {
      return position;
    },
    done,
    waitFor(target, timeoutMs) {
      if (position >= target) return Promise.resolve();
      if (stopped) return Promise.reject(stopped.error ?? new ClosedError(`projection ${name} stopped at ${position}`));
      return new Promise<void>((resolve, reject) => {
        let timer: NodeJS.Timeout | undefined;
        const w: Waiter = {
          position: target,
          resolve: () => {
            clearTimeout(timer);
            waiters.delete(w);
            resolve();
          },
          reject: (err) => {
            clearTimeout(timer);
            waiters.delete(w);
            reject(err);
          },
        };
        if (timeoutMs !== undefined) {
          timer = setTimeout(
            () =>
              w.reject(
                new TimeoutError(`projection ${name} did not reach ${target} within ${timeoutMs} ms (at ${position})`),
              ),
            timeoutMs,
          );
        }
        waiters.add(w);
      });
    },
    stop() {
      stopping$ ??= (async () => {
        stopping = true;
        await subscription?.close();
        await done.catch(() => {});
      })();
      return stopping$;
    },
    async [Symbol.asyncDispose]() {
      await self.stop();
    },
  };
  return self;
}
