import {
  type Artifact,
  assertArtifact,
  type TaskInput,
  type TaskMessage,
  toTaskMessage,
} from './agent-task-content.js';
import { type TaskNudges, Waker } from './agent-task-feed.js';
import {
  type ArtifactData,
  absorbTaskEvents,
  applyTaskEvent,
  assertTransition,
  isTerminalState,
  loadTask,
  type StatusData,
  TASK_EVENT_METADATA,
  TASK_EVENTS,
  type Task,
  type TaskEffect,
  type TaskRecord,
  type TaskState,
  TaskStateError,
  taskStreamId,
} from './agent-task-model.js';
import { ConcurrencyError, isRetryable, ValidationError } from './errors.js';
import type { EventStore, NewEvent, StoredEvent } from './event-store.js';
import type { Logger } from './logger.js';

/** What a task handler can do with its task. Every method resolves once the update is stored. */
export interface TaskContext {
  /** The task as last seen (answers and a cancel included). */
  readonly task: Task;
  /**
   * Aborted when the task is canceled (its reason a TaskStateError) or the server closes (a
   * ClosedError: the task goes back to the queue and resumes on the next run). Pass it on.
   */
  readonly signal: AbortSignal;
  /**
   * True when this is not the task's first run (its executor stopped while it ran). The handler
   * runs from the start again; its updates, artifacts and questions that are already stored are
   * recognised in order and not stored again, and answered questions return their stored answer.
   * Work outside the context (a model call) runs again: look at `task` to skip it.
   */
  readonly resumed: boolean;
  /**
   * A progress note (`working`), or the end: `completed`, `failed`, `rejected` (the executor will not
   * do it). TaskStateError once the task ended, and for `working` while it waits for an answer.
   */
  update(state: 'working' | 'completed' | 'failed' | 'rejected', message?: TaskInput): Promise<Task>;
  /** Adds or replaces an artifact, or grows it by a chunk (`append`). */
  artifact(artifact: Artifact, options?: { readonly append?: boolean; readonly lastChunk?: boolean }): Promise<Task>;
  /**
   * Asks the caller (`input-required` with `prompt` as the status message) and resolves with the
   * answer. Durable: the question and the answer are in the store, so a restarted executor picks
   * the wait up where it was. Rejects with the signal's reason when the task is canceled or the server closes.
   */
  requestInput(prompt: TaskInput): Promise<TaskMessage>;
}

/** What a handler may return: the message of the `completed` status (if it did not end the task itself). */
// biome-ignore lint/suspicious/noConfusingVoidType: handlers that return nothing are typed `void`, not `undefined`
export type TaskHandlerResult = TaskInput | undefined | void;

/**
 * Executes a task. Resolving completes it (with the result as the status message), throwing fails
 * it (with the error's message) — unless the task ended before (the handler did, or it was canceled).
 */
export type TaskHandler = (task: Task, ctx: TaskContext) => TaskHandlerResult | Promise<TaskHandlerResult>;

/** What task runs and requests need of their server. */
export interface TaskHost {
  readonly store: EventStore;
  readonly nudges: TaskNudges;
  readonly logger: Logger;
  readonly ids: () => string;
  readonly pollIntervalMs: number;
}

/** Appends that lose a race are decided again on the new state, at most this many times. */
const MAX_CONFLICTS = 50;

/** Reads what was appended after `rec`. */
async function catchUp(store: EventStore, rec: TaskRecord): Promise<TaskRecord> {
  const events: StoredEvent[] = [];
  for await (const e of store.read(taskStreamId(rec.task.id), { fromVersion: rec.task.cursor + 1 })) events.push(e);
  return absorbTaskEvents(rec, events).rec;
}

/**
 * Appends what `decide` makes of the task (nothing when it returns undefined; it throws to refuse),
 * expecting the version `rec` reflects; after a conflict it reads the new events and decides again.
 * Nudges the task's followers. Resolves with the task after the append.
 */
export async function commitTask(
  host: TaskHost,
  taskId: string,
  rec: TaskRecord | undefined,
  decide: (rec: TaskRecord | undefined) => readonly NewEvent[] | undefined,
): Promise<TaskRecord | undefined> {
  let current = rec;
  for (let conflicts = 0; ; conflicts++) {
    const events = decide(current);
    if (events === undefined) return current;
    try {
      const res = await host.store.append(taskStreamId(taskId), events, {
        expectedVersion: current?.task.cursor ?? 'no-stream',
      });
      let next = current;
      for (const e of res.events) next = applyTaskEvent(next, e);
      await host.nudges.notify(taskId, res.version, host.logger);
      return next;
    } catch (err) {
      if (!(err instanceof ConcurrencyError) || conflicts >= MAX_CONFLICTS) throw err;
      current = current ? await catchUp(host.store, current) : await loadTask(host.store, taskId);
    }
  }
}

/** A status event; `effect` marks what a handler did (replayed on resume). */
export function statusEvent(state: TaskState, message?: TaskMessage, metadata?: Record<string, string>): NewEvent {
  const data: StatusData = message ? { state, message } : { state };
  return metadata ? { type: TASK_EVENTS.status, data, metadata } : { type: TASK_EVENTS.status, data };
}

const EFFECT = Object.freeze({ [TASK_EVENT_METADATA.effect]: '1' });
const UPDATE_STATES: ReadonlySet<string> = new Set(['working', 'completed', 'failed', 'rejected']);

type EffectKey =
  | { readonly kind: 'status'; readonly state: TaskState }
  | { readonly kind: 'artifact'; readonly artifactId: string }
  | { readonly kind: 'input' };

function sameEffect(stored: TaskEffect, key: EffectKey): boolean {
  if (stored.kind === 'status') return key.kind === 'status' && key.state === stored.state;
  if (stored.kind === 'artifact') return key.kind === 'artifact' && key.artifactId === stored.artifactId;
  return key.kind === 'input';
}

/**
 * Claims a task for the run message `runId`: a `submitted` task becomes `working` with the claim;
 * a task this run message claimed before is resumed (its message came back: the executor stopped).
 * Undefined when there is nothing to run: no such task, already ended, or claimed by another run
 * message (a duplicate).
 */
export async function claimTask(
  host: TaskHost,
  taskId: string,
  runId: string,
): Promise<{ rec: TaskRecord; resumed: boolean } | undefined> {
  let claimedNow = false;
  const rec = await commitTask(host, taskId, await loadTask(host.store, taskId), (r) => {
    claimedNow = r?.task.status.state === 'submitted';
    return claimedNow ? [statusEvent('working', undefined, { [TASK_EVENT_METADATA.run]: runId })] : undefined;
  });
  if (!rec || isTerminalState(rec.task.status.state) || rec.runId !== runId) return undefined;
  return { rec, resumed: !claimedNow };
}

/** One run of a handler on a claimed task, following the task's stream meanwhile for answers and a cancel. */
export class TaskRun {
  readonly taskId: string;
  readonly signal: AbortSignal;
  readonly #host: TaskHost;
  readonly #resumed: boolean;
  readonly #shutdown: AbortSignal;
  #rec: TaskRecord;
  #replaying: boolean;
  #replayAt = 0;
  /** The handler's appends, one after the other in call order. */
  #queue: Promise<unknown> = Promise.resolve();
  /** A retryable failure of the store or bus under a context call: the run is retried, not failed. */
  #infraError: unknown;
  readonly #waker = new Waker();
  readonly #stop = new AbortController();
  readonly #ended = new AbortController();
  readonly #changed = new Set<() => void>();

  constructor(host: TaskHost, rec: TaskRecord, resumed: boolean, shutdown: AbortSignal) {
    this.#host = host;
    this.#rec = rec;
    this.taskId = rec.task.id;
    this.#resumed = resumed;
    this.#shutdown = shutdown;
    this.#replaying = resumed && rec.effects.length > 0;
    this.signal = AbortSignal.any([this.#ended.signal, shutdown]);
  }

  get task(): Task {
    return structuredClone(this.#rec.task);
  }

  /**
   * Runs the handler to the end of the task. `shutdown`: the server is closing and the task did not
   * end, so its run message should go back to the queue.
   */
  async execute(handler: TaskHandler): Promise<'done' | 'shutdown'> {
    const unwatch = await this.#host.nudges.watch(this.taskId, () => this.#waker.poke());
    const following = this.#follow();
    try {
      await this.#refresh(); // a cancel may have come before the watch started
      if (isTerminalState(this.#rec.task.status.state)) return 'done';
      if (this.#shutdown.aborted) return 'shutdown';
      let result: TaskHandlerResult;
      let failure: unknown;
      let threw = false;
      try {
        result = await handler(this.task, this.#context());
      } catch (err) {
        threw = true;
        failure = err;
      }
      await this.#queue;
      if (isTerminalState(this.#rec.task.status.state)) return 'done';
      if (threw && this.#shutdown.aborted) return 'shutdown';
      if (threw && this.#infraError !== undefined) throw this.#infraError;
      const message = threw
        ? toTaskMessage(failure instanceof Error ? failure.message : String(failure), 'agent', this.#host.ids)
        : result === undefined || result === null
          ? undefined
          : toTaskMessage(result as TaskInput, 'agent', this.#host.ids);
      await this.#commit((r) =>
        isTerminalState(r.task.status.state) ? undefined : [statusEvent(threw ? 'failed' : 'completed', message)],
      );
      return 'done';
    } finally {
      this.#stop.abort();
      await following;
      await unwatch();
    }
  }

  #context(): TaskContext {
    const run = this;
    return {
      get task() {
        return run.task;
      },
      signal: this.signal,
      resumed: this.#resumed,
      update: (state, message) => this.#update(state, message),
      artifact: (artifact, options) => this.#artifact(artifact, options ?? {}),
      requestInput: (prompt) => this.#requestInput(prompt),
    };
  }

  async #update(state: TaskState, message: TaskInput | undefined): Promise<Task> {
    if (!UPDATE_STATES.has(state)) {
      throw new ValidationError(
        `a handler updates a task to working, completed, failed or rejected, not ${JSON.stringify(state)}` +
          (state === 'input-required' ? ' (use requestInput)' : ''),
      );
    }
    const msg = message === undefined ? undefined : toTaskMessage(message, 'agent', this.#host.ids);
    await this.#effect({ kind: 'status', state }, (r) => {
      if (state === 'working' && r.task.status.state === 'input-required') {
        throw new TaskStateError(`task ${this.taskId} is input-required: only the caller's answer makes it working`, {
          data: { taskId: this.taskId, state: 'input-required', attempted: 'working' },
        });
      }
      assertTransition(this.taskId, r.task.status.state, state);
      return [statusEvent(state, msg, EFFECT)];
    });
    return this.task;
  }

  async #artifact(artifact: Artifact, options: { append?: boolean; lastChunk?: boolean }): Promise<Task> {
    assertArtifact(artifact);
    const data: ArtifactData = {
      artifact,
      ...(options.append ? { append: true } : {}),
      ...(options.lastChunk ? { lastChunk: true } : {}),
    };
    await this.#effect({ kind: 'artifact', artifactId: artifact.artifactId }, (r) => {
      const state = r.task.status.state;
      if (isTerminalState(state)) {
        throw new TaskStateError(`task ${this.taskId} is ${state}: it accepts no more updates`, {
          data: { taskId: this.taskId, state, attempted: 'artifact' },
        });
      }
      return [{ type: TASK_EVENTS.artifact, data, metadata: EFFECT }];
    });
    return this.task;
  }

  async #requestInput(prompt: TaskInput): Promise<TaskMessage> {
    const msg = toTaskMessage(prompt, 'agent', this.#host.ids);
    const { replayed, rec } = await this.#effect({ kind: 'input' }, (r) => {
      assertTransition(this.taskId, r.task.status.state, 'input-required');
      return [statusEvent('input-required', msg, EFFECT)];
    });
    const n = replayed?.kind === 'input' ? replayed.prompt : rec.prompts;
    for (;;) {
      const answer = this.#rec.answers[n - 1];
      if (answer) return answer;
      this.signal.throwIfAborted();
      await new Promise<void>((resolve) => {
        const done = () => {
          this.#changed.delete(done);
          this.signal.removeEventListener('abort', done);
          resolve();
        };
        this.#changed.add(done);
        this.signal.addEventListener('abort', done, { once: true });
      });
    }
  }

  /**
   * Stores what the handler did, in call order — or, while a resumed handler repeats what is
   * already stored, recognises it instead.
   */
  #effect(
    key: EffectKey,
    decide: (rec: TaskRecord) => readonly NewEvent[],
  ): Promise<{ replayed: TaskEffect | undefined; rec: TaskRecord }> {
    const step = this.#queue.then(async () => {
      if (this.#replaying) {
        const stored = this.#rec.effects[this.#replayAt];
        if (stored !== undefined && sameEffect(stored, key)) {
          this.#replayAt++;
          return { replayed: stored, rec: this.#rec };
        }
        if (stored !== undefined) {
          this.#host.logger.warn(
            { taskId: this.taskId, at: this.#replayAt, stored, now: key },
            'resumed task handler does not repeat its stored updates; storing what it does from here on',
          );
        }
        this.#replaying = false;
      }
      try {
        return { replayed: undefined, rec: await this.#commit(decide) };
      } catch (err) {
        if (isRetryable(err)) this.#infraError ??= err;
        throw err;
      }
    });
    this.#queue = step.catch(() => {});
    return step;
  }

  async #commit(decide: (rec: TaskRecord) => readonly NewEvent[] | undefined): Promise<TaskRecord> {
    const next = await commitTask(this.#host, this.taskId, this.#rec, (r) => decide(r as TaskRecord));
    this.#adopt(next as TaskRecord);
    return next as TaskRecord;
  }

  /** Takes a newer fold of the task (from an append or a read) and reacts to what changed. */
  #adopt(rec: TaskRecord): void {
    if (rec.task.cursor <= this.#rec.task.cursor) return;
    this.#rec = rec;
    const state = rec.task.status.state;
    if (isTerminalState(state) && !this.#ended.signal.aborted) {
      this.#ended.abort(
        new TaskStateError(`task ${this.taskId} is ${state}`, {
          data: { taskId: this.taskId, state, attempted: 'run' },
        }),
      );
    }
    for (const wake of [...this.#changed]) wake();
  }

  async #refresh(): Promise<void> {
    this.#adopt(await catchUp(this.#host.store, this.#rec));
  }

  async #follow(): Promise<void> {
    const stop = this.#stop.signal;
    while (!stop.aborted) {
      await this.#waker.wait(this.#host.pollIntervalMs, stop);
      if (stop.aborted) return;
      try {
        await this.#refresh();
      } catch (err) {
        this.#host.logger.warn({ err, taskId: this.taskId }, 'reading task updates failed; retrying at the next poll');
      }
    }
  }
}
