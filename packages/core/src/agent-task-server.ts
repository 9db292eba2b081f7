import { assertTaskMessage, type TaskMessage, toTaskMessage } from './agent-task-content.js';
import { TaskNudges } from './agent-task-feed.js';
import {
  assertTaskId,
  isTerminalState,
  loadTask,
  TASK_EVENTS,
  type Task,
  TaskNotFoundError,
  type TaskRecord,
  TaskStateError,
  taskTopics,
} from './agent-task-model.js';
import { claimTask, commitTask, statusEvent, type TaskHandler, type TaskHost, TaskRun } from './agent-task-run.js';
import type { Bus, BusSubscription } from './bus.js';
import type { Delivery } from './delivery.js';
import { ClosedError, ConfigError, ValidationError } from './errors.js';
import type { EventStore } from './event-store.js';
import { type Logger, stderrLogger } from './logger.js';
import { nonNegativeNumber, positiveInteger, positiveNumber } from './validate.js';

export interface TaskServerOptions {
  /** The executor agent: it takes requests on `agent.<agentId>.tasks`. */
  readonly agentId: string;
  readonly handler: TaskHandler;
  /** Where tasks live; callers read the same store. */
  readonly store: EventStore;
  /** Tasks running at once in this server (a task waiting for input counts). */
  readonly concurrency?: number;
  /** start / answer / cancel requests handled at once. */
  readonly requestConcurrency?: number;
  /** Lease of a running task's run message (renewed while it runs): how soon another executor takes over a crashed one's tasks. */
  readonly ackTimeoutMs?: number;
  /** Runs of one task (restarts, crashes, store failures) before its run message is dead-lettered. */
  readonly maxRunAttempts?: number;
  /**
   * When the server closes, a task still running goes back to the queue with this delay before the
   * next executor may take it. Long enough that no transport hands it back to a consumer that is
   * going away (a closed JetStream subscription's pull requests wait at the server up to a second).
   */
  readonly handBackDelayMs?: number;
  /** How often a running task reads its stream when no nudge came (answers and cancels nudge). */
  readonly pollIntervalMs?: number;
  readonly logger?: Logger;
}

export const TASK_SERVER_DEFAULTS = Object.freeze({
  concurrency: 64,
  requestConcurrency: 16,
  ackTimeoutMs: 30_000,
  maxRunAttempts: 100,
  handBackDelayMs: 1_500,
  pollIntervalMs: 1_000,
});

/** A request to an executor agent: the data of a bus request on `agent.<agentId>.tasks`; the reply is the {@link Task}. */
export type TaskRequest =
  | {
      readonly op: 'start';
      readonly taskId: string;
      readonly message: TaskMessage;
      readonly contextId?: string;
      readonly metadata?: Record<string, unknown>;
    }
  | { readonly op: 'answer'; readonly taskId: string; readonly message: TaskMessage }
  | { readonly op: 'cancel'; readonly taskId: string; readonly reason?: string };

/** The envelope type of a task's run message. */
export const TASK_RUN_TYPE = 'agentbus.task.run';

function parseRequest(data: unknown): TaskRequest {
  const r = data as Partial<Record<string, unknown>> | null;
  if (typeof r !== 'object' || r === null) throw new ValidationError('a task request must be an object');
  assertTaskId(r.taskId);
  switch (r.op) {
    case 'start':
      assertTaskMessage(r.message, 'user');
      if (r.contextId !== undefined) assertTaskId(r.contextId, 'contextId');
      if (r.metadata !== undefined && (typeof r.metadata !== 'object' || r.metadata === null)) {
        throw new ValidationError('task metadata must be an object');
      }
      return r as TaskRequest;
    case 'answer':
      assertTaskMessage(r.message, 'user');
      return r as TaskRequest;
    case 'cancel':
      if (r.reason !== undefined && typeof r.reason !== 'string') throw new ValidationError('reason must be a string');
      return r as TaskRequest;
    default:
      throw new ValidationError(`unknown task request op ${JSON.stringify(r.op)}: start, answer or cancel expected`);
  }
}

/**
 * The executor side of agent tasks: takes start / answer / cancel requests for one agent and runs
 * its handler on each task. Use {@link taskServer}.
 *
 * Each accepted task gets one durable run message on `agent.<agentId>.task-runs`; a server runs the
 * handler while it holds that message (the bus renews its lease), and acks it when the task ended.
 * If the server stops or crashes first, the message comes back — to this agent's next server, or
 * another one competing on the same group — and the task resumes there from its stored state
 * (see `TaskContext.resumed`). Requests may reach any of the agent's servers: they act on the store
 * (appends with `expectedVersion`, decided again after a conflict), and the server running the task
 * follows its stream (nudged on `_task.<id>`) for answers and a cancel.
 */
export class TaskServer implements AsyncDisposable {
  readonly agentId: string;
  readonly #bus: Bus;
  readonly #host: TaskHost;
  readonly #handler: TaskHandler;
  readonly #handBackDelayMs: number;
  readonly #shutdown = new AbortController();
  readonly #runs = new Map<string, Promise<void>>();
  readonly #subscriptions: BusSubscription[] = [];
  #closing: Promise<void> | undefined;

  private constructor(bus: Bus, options: TaskServerOptions) {
    assertTaskId(options.agentId, 'agentId');
    this.agentId = options.agentId;
    this.#bus = bus;
    this.#handler = options.handler;
    this.#handBackDelayMs = nonNegativeNumber(
      options.handBackDelayMs ?? TASK_SERVER_DEFAULTS.handBackDelayMs,
      'taskServer.handBackDelayMs',
    );
    this.#host = {
      store: options.store,
      nudges: TaskNudges.of(bus),
      logger: options.logger ?? stderrLogger,
      ids: bus.ids,
      pollIntervalMs: positiveNumber(
        options.pollIntervalMs ?? TASK_SERVER_DEFAULTS.pollIntervalMs,
        'taskServer.pollIntervalMs',
      ),
    };
  }

  /** Creates a server and subscribes it (see {@link taskServer}). */
  static async start(bus: Bus, options: TaskServerOptions): Promise<TaskServer> {
    if (typeof bus?.reply !== 'function') throw new ConfigError('a Bus is required', { path: 'bus' });
    if (typeof options?.handler !== 'function')
      throw new ConfigError('a handler is required', { path: 'taskServer.handler' });
    if (typeof options.store?.append !== 'function') {
      throw new ConfigError('an EventStore is required', { path: 'taskServer.store' });
    }
    const d = TASK_SERVER_DEFAULTS;
    const concurrency = positiveInteger(options.concurrency ?? d.concurrency, 'taskServer.concurrency');
    const requestConcurrency = positiveInteger(
      options.requestConcurrency ?? d.requestConcurrency,
      'taskServer.requestConcurrency',
    );
    const ackTimeoutMs = positiveInteger(options.ackTimeoutMs ?? d.ackTimeoutMs, 'taskServer.ackTimeoutMs');
    const maxAttempts = positiveInteger(options.maxRunAttempts ?? d.maxRunAttempts, 'taskServer.maxRunAttempts');
    const server = new TaskServer(bus, options);
    try {
      // Runs first: the group must exist before the first start publishes to it.
      server.#subscriptions.push(
        await bus.subscribe<{ taskId: string }>(taskTopics.runs(server.agentId), (d) => server.#onRun(d), {
          group: taskTopics.runs(server.agentId),
          concurrency,
          ackTimeoutMs,
          maxAttempts,
        }),
      );
      server.#subscriptions.push(
        await bus.reply(taskTopics.requests(server.agentId), (d) => server.#onRequest(d), {
          group: taskTopics.requests(server.agentId),
          concurrency: requestConcurrency,
        }),
      );
    } catch (err) {
      await server.close();
      throw err;
    }
    return server;
  }

  /** Tasks this server is running now. */
  get running(): number {
    return this.#runs.size;
  }

  async #onRequest(d: Delivery<unknown>): Promise<Task> {
    const req = parseRequest(d.data);
    switch (req.op) {
      case 'start':
        return this.#start(req);
      case 'answer':
        return this.#answer(req);
      case 'cancel':
        return this.#cancel(req);
    }
  }

  /** The task if it is this agent's. */
  async #load(taskId: string): Promise<TaskRecord | undefined> {
    const rec = await loadTask(this.#host.store, taskId);
    return rec?.task.agentId === this.agentId ? rec : undefined;
  }

  #notFound(taskId: string): TaskNotFoundError {
    return new TaskNotFoundError(`agent ${this.agentId} has no task ${taskId}`, {
      data: { taskId, agentId: this.agentId },
    });
  }

  /**
   * Stores the task as `submitted` and publishes its run message. A start repeated with the same
   * message id is taken once (its run message is published again while the task is still
   * `submitted`: the first may have been lost); any other start with a taken task id is refused.
   */
  async #start(req: Extract<TaskRequest, { op: 'start' }>): Promise<Task> {
    const { taskId } = req;
    let existed = false;
    const rec = (await commitTask(this.#host, taskId, await loadTask(this.#host.store, taskId), (r) => {
      existed = r !== undefined;
      if (existed) return undefined;
      const data = {
        agentId: this.agentId,
        contextId: req.contextId ?? this.#host.ids(),
        message: req.message,
        ...(req.metadata === undefined ? {} : { metadata: req.metadata }),
      };
      return [{ type: TASK_EVENTS.submitted, data }];
    })) as TaskRecord;
    const task = rec.task;
    if (existed) {
      if (task.agentId !== this.agentId || task.history[0]?.messageId !== req.message.messageId) {
        throw new TaskStateError(`task ${taskId} exists (${task.status.state}): a task id is used once`, {
          data: { taskId, state: task.status.state, attempted: 'start' },
        });
      }
      if (task.status.state !== 'submitted') return task;
    }
    await this.#bus.publish(taskTopics.runs(this.agentId), { taskId }, { type: TASK_RUN_TYPE });
    return task;
  }

  /** Stores the caller's answer to the pending question; the same answer (message id) twice is taken once. */
  async #answer(req: Extract<TaskRequest, { op: 'answer' }>): Promise<Task> {
    const { taskId, message } = req;
    const rec = await commitTask(this.#host, taskId, await this.#load(taskId), (r) => {
      if (!r) throw this.#notFound(taskId);
      if (r.answers.at(-1)?.messageId === message.messageId) return undefined;
      const state = r.task.status.state;
      if (state !== 'input-required') {
        throw new TaskStateError(`task ${taskId} is ${state}: only an input-required task takes an answer`, {
          data: { taskId, state, attempted: 'answer' },
        });
      }
      return [{ type: TASK_EVENTS.answer, data: { message } }];
    });
    return (rec as TaskRecord).task;
  }

  /** Ends the task `canceled` (the server running it aborts its handler). Canceling a canceled task is a no-op. */
  async #cancel(req: Extract<TaskRequest, { op: 'cancel' }>): Promise<Task> {
    const { taskId, reason } = req;
    const message = reason === undefined ? undefined : toTaskMessage(reason, 'user', this.#host.ids);
    const rec = await commitTask(this.#host, taskId, await this.#load(taskId), (r) => {
      if (!r) throw this.#notFound(taskId);
      const state = r.task.status.state;
      if (state === 'canceled') return undefined;
      if (isTerminalState(state)) {
        throw new TaskStateError(`task ${taskId} is ${state}: it cannot be canceled`, {
          data: { taskId, state, attempted: 'canceled' },
        });
      }
      return [statusEvent('canceled', message)];
    });
    return (rec as TaskRecord).task;
  }

  async #onRun(d: Delivery<{ taskId: string }>): Promise<void> {
    if (this.#shutdown.signal.aborted) {
      await d.nack({ delayMs: this.#handBackDelayMs });
      return;
    }
    const taskId = d.data?.taskId;
    assertTaskId(taskId);
    const running = this.#runs.get(taskId);
    if (running) {
      // The same task's message again while it runs here (a duplicate, or a lease lost in a stall).
      await running.catch(() => {});
      return;
    }
    const run = this.#run(d, taskId);
    this.#runs.set(taskId, run);
    try {
      await run;
    } finally {
      if (this.#runs.get(taskId) === run) this.#runs.delete(taskId);
    }
  }

  async #run(d: Delivery<{ taskId: string }>, taskId: string): Promise<void> {
    const claimed = await claimTask(this.#host, taskId, d.envelope.id);
    if (!claimed) return;
    if (claimed.resumed) this.#host.logger.info({ taskId, attempt: d.attempt }, 'resuming task');
    const run = new TaskRun(this.#host, claimed.rec, claimed.resumed, this.#shutdown.signal);
    if ((await run.execute(this.#handler)) === 'shutdown') await d.nack({ delayMs: this.#handBackDelayMs });
  }

  /**
   * Stops taking requests and runs. Running handlers see their signal aborted (a ClosedError) and
   * a pending `requestInput` rejects; a task whose handler ends that way goes back to the queue
   * and resumes on the next server. Waits for the handlers. Close it before the bus (a bus closed
   * first waits for handlers that wait for input). Idempotent.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#shutdown.abort(new ClosedError(`task server ${this.agentId} is closing`));
      await Promise.all(this.#subscriptions.map((s) => s.close()));
    })();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/**
 * Serves the tasks of agent `agentId` over `bus`: see {@link TaskServer}. Resolves once it takes
 * requests. The server neither owns the bus nor the store: close it, then them.
 */
export function taskServer(bus: Bus, options: TaskServerOptions): Promise<TaskServer> {
  return TaskServer.start(bus, options);
}
