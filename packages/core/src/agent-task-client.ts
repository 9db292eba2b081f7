import { type TaskInput, toTaskMessage } from './agent-task-content.js';
import { TaskNudges, Waker } from './agent-task-feed.js';
import {
  assertTaskId,
  isTerminalState,
  loadTask,
  type Task,
  TaskNotFoundError,
  type TaskUpdate,
  taskErrorFromWire,
  taskStreamId,
  taskTopics,
  taskUpdateOf,
} from './agent-task-model.js';
import type { TaskRequest } from './agent-task-server.js';
import type { Bus } from './bus.js';
import { ClosedError, ConfigError, ValidationError } from './errors.js';
import type { EventStore } from './event-store.js';
import { positiveInteger, positiveNumber } from './validate.js';

export interface TaskClientOptions {
  /** The store the executors write tasks to. */
  readonly store: EventStore;
  /** How long start / answer / cancel wait for the executor's reply. */
  readonly requestTimeoutMs?: number;
  /** How often a caught-up `updates()` reads the store when no nudge came (a lost nudge costs at most this). */
  readonly pollIntervalMs?: number;
}

export const TASK_CLIENT_DEFAULTS = Object.freeze({ requestTimeoutMs: 30_000, pollIntervalMs: 1_000 });

export interface TaskRequestOptions {
  /** Default: the client's `requestTimeoutMs`. */
  readonly timeoutMs?: number;
  readonly signal?: AbortSignal;
}

export interface StartTaskOptions extends TaskRequestOptions {
  /** Default: a new UUIDv7. One topic segment: `[A-Za-z0-9_-:@$]`, 1–200 characters. */
  readonly taskId?: string;
  /** Groups related tasks; the executor makes one up when absent. */
  readonly contextId?: string;
  readonly metadata?: Record<string, unknown>;
}

export interface TaskUpdatesOptions {
  /** The cursor of the last update seen: the stream starts after it (default 0: from the start). */
  readonly after?: number;
  /** Ends the stream (quietly) when aborted. */
  readonly signal?: AbortSignal;
}

/** One task of a {@link TaskClient}: the same operations with the task id filled in. */
export class TaskHandle {
  constructor(
    readonly client: TaskClient,
    readonly id: string,
    /** The task as the executor accepted it (undefined for a handle from `client.handle(id)`). */
    readonly task?: Task,
  ) {}
  updates(options?: TaskUpdatesOptions): AsyncIterable<TaskUpdate> {
    return this.client.updates(this.id, options);
  }
  get(): Promise<Task | undefined> {
    return this.client.get(this.id);
  }
  answer(input: TaskInput, options?: TaskRequestOptions): Promise<Task> {
    return this.client.answer(this.id, input, options);
  }
  cancel(options?: TaskRequestOptions & { readonly reason?: string }): Promise<Task> {
    return this.client.cancel(this.id, options);
  }
  wait(options?: { readonly signal?: AbortSignal }): Promise<Task> {
    return this.client.wait(this.id, options);
  }
}

/**
 * The caller side of agent tasks: starts tasks on executor agents, follows their updates, answers
 * their questions, cancels them. Use {@link taskClient}.
 *
 * start / answer / cancel are bus requests to the executor (`agent.<id>.tasks`); a task's error
 * comes back as the same class (TaskStateError, TaskNotFoundError, ValidationError …). Updates are
 * read from the store, where the executor appends them, so any client over the same store follows
 * any task: after a disconnect or a restart, `updates(id, { after: lastCursor })` returns exactly
 * the updates after that cursor, in order, then the live ones (nudged over the bus).
 */
export class TaskClient implements AsyncDisposable {
  readonly #bus: Bus;
  readonly #store: EventStore;
  readonly #nudges: TaskNudges;
  readonly #requestTimeoutMs: number;
  readonly #pollIntervalMs: number;
  readonly #open = new Set<AbortController>();
  #closed = false;

  constructor(bus: Bus, options: TaskClientOptions) {
    if (typeof bus?.request !== 'function') throw new ConfigError('a Bus is required', { path: 'bus' });
    if (typeof options?.store?.read !== 'function') {
      throw new ConfigError('an EventStore is required', { path: 'taskClient.store' });
    }
    this.#bus = bus;
    this.#store = options.store;
    this.#nudges = TaskNudges.of(bus);
    this.#requestTimeoutMs = positiveInteger(
      options.requestTimeoutMs ?? TASK_CLIENT_DEFAULTS.requestTimeoutMs,
      'taskClient.requestTimeoutMs',
    );
    this.#pollIntervalMs = positiveNumber(
      options.pollIntervalMs ?? TASK_CLIENT_DEFAULTS.pollIntervalMs,
      'taskClient.pollIntervalMs',
    );
  }

  /**
   * Starts a task on agent `agentId`; resolves once the executor stored it (`submitted`). Starting
   * again with a message that has the same `messageId` is safe (the task is started once); another
   * start with a taken task id fails with TaskStateError.
   */
  async start(agentId: string, input: TaskInput, options: StartTaskOptions = {}): Promise<TaskHandle> {
    assertTaskId(agentId, 'agentId');
    const taskId = options.taskId ?? this.#bus.ids();
    assertTaskId(taskId);
    if (options.contextId !== undefined) assertTaskId(options.contextId, 'contextId');
    const request: TaskRequest = {
      op: 'start',
      taskId,
      message: toTaskMessage(input, 'user', this.#bus.ids),
      ...(options.contextId === undefined ? {} : { contextId: options.contextId }),
      ...(options.metadata === undefined ? {} : { metadata: options.metadata }),
    };
    return new TaskHandle(this, taskId, await this.#request(agentId, request, options));
  }

  /** A handle on a task started earlier (by this client or another one, before a restart …). */
  handle(taskId: string): TaskHandle {
    assertTaskId(taskId);
    return new TaskHandle(this, taskId);
  }

  /** The task as stored now (undefined: no such task). */
  async get(taskId: string): Promise<Task | undefined> {
    assertTaskId(taskId);
    return (await loadTask(this.#store, taskId))?.task;
  }

  /** Answers an `input-required` task (TaskStateError otherwise). The same message id twice is taken once. */
  async answer(taskId: string, input: TaskInput, options: TaskRequestOptions = {}): Promise<Task> {
    const task = await this.#existing(taskId);
    const message = toTaskMessage(input, 'user', this.#bus.ids);
    return this.#request(task.agentId, { op: 'answer', taskId, message }, options);
  }

  /**
   * Cancels a task: it ends `canceled` at once and its handler's signal is aborted. Canceling a
   * canceled task is a no-op; another ended task refuses with TaskStateError.
   */
  async cancel(taskId: string, options: TaskRequestOptions & { readonly reason?: string } = {}): Promise<Task> {
    const task = await this.#existing(taskId);
    const request: TaskRequest = {
      op: 'cancel',
      taskId,
      ...(options.reason === undefined ? {} : { reason: options.reason }),
    };
    return this.#request(task.agentId, request, options);
  }

  /** Resolves with the task once it ended; rejects with the signal's reason (or ClosedError) if it stops waiting first. */
  async wait(taskId: string, options: { readonly signal?: AbortSignal } = {}): Promise<Task> {
    const version = (await this.#existing(taskId)).cursor;
    for await (const _ of this.updates(taskId, { after: version, ...options })) {
      // updates() ends with the final update
    }
    const task = await this.get(taskId);
    if (task && isTerminalState(task.status.state)) return task;
    throw options.signal?.reason ?? new ClosedError('task client is closed');
  }

  /**
   * The task's updates after the cursor `after`, in order: first those stored, then the live ones,
   * until the final one (a terminal status) — or until `signal` aborts or the client closes. Each
   * update's `cursor` is where to resume. TaskNotFoundError when there is no such task.
   */
  updates(taskId: string, options: TaskUpdatesOptions = {}): AsyncIterable<TaskUpdate> {
    assertTaskId(taskId);
    const after = options.after ?? 0;
    if (!Number.isSafeInteger(after) || after < 0) {
      throw new ValidationError(`invalid cursor ${String(after)}: an integer >= 0 expected`);
    }
    this.#assertOpen();
    return this.#follow(taskId, after, options.signal);
  }

  async *#follow(taskId: string, after: number, signal: AbortSignal | undefined): AsyncGenerator<TaskUpdate> {
    const stop = new AbortController();
    const onAbort = () => stop.abort();
    signal?.addEventListener('abort', onAbort, { once: true });
    if (signal?.aborted) stop.abort();
    this.#open.add(stop);
    const waker = new Waker();
    let unwatch: (() => Promise<void>) | undefined;
    try {
      // Watch before reading: an update stored after the read is nudged.
      unwatch = await this.#nudges.watch(taskId, () => waker.poke());
      const streamId = taskStreamId(taskId);
      const version = await this.#store.version(streamId);
      if (version === 0) throw new TaskNotFoundError(`no task ${taskId}`, { data: { taskId } });
      if (after > version) {
        throw new ValidationError(`cursor ${after} is past the last update of task ${taskId} (${version})`);
      }
      if (after > 0) {
        // Nothing follows a final update.
        for await (const e of this.#store.read(streamId, { fromVersion: after, limit: 1 })) {
          const u = taskUpdateOf(e);
          if (u?.kind === 'status' && u.final) return;
        }
      }
      let cursor = after;
      while (!stop.signal.aborted) {
        for await (const e of this.#store.read(streamId, { fromVersion: cursor + 1 })) {
          cursor = e.version;
          const update = taskUpdateOf(e);
          if (update === undefined) continue;
          yield update;
          if ((update.kind === 'status' && update.final) || stop.signal.aborted) return;
        }
        await waker.wait(this.#pollIntervalMs, stop.signal);
      }
    } finally {
      signal?.removeEventListener('abort', onAbort);
      this.#open.delete(stop);
      await unwatch?.();
    }
  }

  async #existing(taskId: string): Promise<Task> {
    const task = await this.get(taskId);
    if (!task) throw new TaskNotFoundError(`no task ${taskId}`, { data: { taskId } });
    return task;
  }

  async #request(agentId: string, request: TaskRequest, options: TaskRequestOptions): Promise<Task> {
    this.#assertOpen();
    try {
      return await this.#bus.request<Task>(taskTopics.requests(agentId), request, {
        type: `agentbus.task.${request.op}`,
        timeoutMs: options.timeoutMs ?? this.#requestTimeoutMs,
        ...(options.signal ? { signal: options.signal } : {}),
      });
    } catch (err) {
      throw taskErrorFromWire(err);
    }
  }

  #assertOpen(): void {
    if (this.#closed) throw new ClosedError('task client is closed');
  }

  /** Ends the open `updates()` streams. The bus and the store are the caller's. Idempotent. */
  async close(): Promise<void> {
    this.#closed = true;
    for (const stop of this.#open) stop.abort();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** A client for agent tasks over `bus`, reading updates from `store` (see {@link TaskClient}). */
export function taskClient(bus: Bus, options: TaskClientOptions): TaskClient {
  return new TaskClient(bus, options);
}
