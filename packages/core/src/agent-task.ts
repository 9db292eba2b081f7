/**
 * Agent tasks: the A2A task lifecycle (submitted → working ⇄ input-required → completed / failed /
 * canceled / rejected) carried over the bus, durable in an event store.
 *
 * - The executor ({@link taskServer}) takes start / answer / cancel requests on
 *   `agent.<agentId>.tasks` and runs its handler on each task while it holds the task's durable run
 *   message: a stopped or crashed executor's tasks resume on the next one.
 * - The caller ({@link taskClient}) starts tasks, answers their questions, cancels them, and follows
 *   their updates from the store, resuming from a cursor after a disconnect or a restart.
 * - A task is the event stream `task-<id>`: the update cursor is the stream version, the store is
 *   the truth and a bus message on `_task.<id>` only nudges followers to read it.
 */

export {
  type StartTaskOptions,
  TASK_CLIENT_DEFAULTS,
  TaskClient,
  type TaskClientOptions,
  TaskHandle,
  type TaskRequestOptions,
  type TaskUpdatesOptions,
  taskClient,
} from './agent-task-client.js';
export {
  type Artifact,
  type DataPart,
  type FilePart,
  messageText,
  type Part,
  type TaskInput,
  type TaskMessage,
  type TextPart,
} from './agent-task-content.js';
export { TASK_NUDGE_TYPE } from './agent-task-feed.js';
export {
  assertTransition,
  canTransition,
  isTerminalState,
  TASK_EVENTS,
  TASK_STATES,
  type Task,
  type TaskArtifactUpdate,
  TaskNotFoundError,
  type TaskState,
  TaskStateError,
  type TaskStateErrorData,
  type TaskStatus,
  type TaskStatusUpdate,
  type TaskUpdate,
  taskErrorFromWire,
  taskStreamId,
  taskTopics,
} from './agent-task-model.js';
export type { TaskContext, TaskHandler, TaskHandlerResult } from './agent-task-run.js';
export {
  TASK_RUN_TYPE,
  TASK_SERVER_DEFAULTS,
  type TaskRequest,
  TaskServer,
  type TaskServerOptions,
  taskServer,
} from './agent-task-server.js';
