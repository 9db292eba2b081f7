import { randomUUID } from 'node:crypto';
import {
  ClosedError,
  createBus,
  type SagaEvent,
  SagaOrchestrator,
  type SagaOrchestratorOptions,
  type SagaRepository,
  type SagaState,
  silentLogger,
  type Transport,
} from '@agentbus/core';
import { afterEach } from 'vitest';
import { type Gate, gate } from './saga-fixtures.js';

export interface SagaBehaviourOptions {
  readonly name: string;
  /** A transport for a test's bus (one per test). */
  readonly transport: () => Transport | Promise<Transport>;
  /**
   * A repository; the same `name` must reach the same sagas — a new connection where the backend
   * has them (as a restarted process would get), the same instance for an in-process one.
   */
  readonly repository: (name: string) => SagaRepository & { close?(): unknown };
}

/** The payload of most test sagas. */
export interface Order {
  orderId: string;
  total: number;
  log: string[];
}

let n = 0;
/** How long a test waits for a saga to end. */
export const DONE = { timeoutMs: 10_000 };

export const stepView = (s: SagaState): string[] => s.steps.map((st) => `${st.name}:${st.status}`);

/** `repo` as seen by a process whose connection closes once `dead()` holds (every call rejects with ClosedError). */
export function severable(repo: SagaRepository, dead: () => boolean): SagaRepository {
  const guard =
    <A extends unknown[], R>(f: (...args: A) => Promise<R>) =>
    (...args: A): Promise<R> =>
      dead() ? Promise.reject(new ClosedError('connection closed')) : f(...args);
  return {
    create: guard((s) => repo.create(s)),
    get: guard((id) => repo.get(id)),
    save: guard((s) => repo.save(s)),
    list: guard((f) => repo.list(f)),
    delete: guard((id) => repo.delete(id)),
  };
}

/** One test's world: a bus, a repository name, unique topics; everything is closed after the test. */
export interface SagaWorld {
  readonly bus: ReturnType<typeof createBus>;
  readonly repo: SagaRepository;
  readonly prefix: string;
  /** Another connection to the test's repository (as a restarted process would open). */
  repository(): SagaRepository;
  orchestrator(options: Partial<SagaOrchestratorOptions> & Pick<SagaOrchestratorOptions, 'sagas'>): SagaOrchestrator;
  /** Records saga events (subscribe before starting sagas). */
  observe(): Promise<{ data: SagaEvent; topic: string; workflowid: string | undefined }[]>;
  /** A gate opened at the latest when the test ends, so a failed test does not hang its cleanup. */
  hold(): Gate;
  /** Runs `cleanup` after the test. */
  defer(cleanup: () => unknown): void;
}

/** Registers the cleanup (call inside a describe) and returns the factory of test worlds. */
export function sagaWorld(o: SagaBehaviourOptions): () => Promise<SagaWorld> {
  const cleanups: (() => unknown)[] = [];
  const gates: (() => void)[] = [];
  afterEach(async () => {
    // Open every gate first, so that a failed test's hanging step does not hang its cleanup.
    for (const open of gates.splice(0)) open();
    for (const c of cleanups.splice(0).reverse()) await c();
  });
  return async () => {
    const id = `s${process.pid}x${Date.now().toString(36)}x${n++}`;
    const prefix = `sg${randomUUID().replaceAll('-', '').slice(0, 10)}`;
    const bus = createBus({ transport: await o.transport(), logger: silentLogger, source: 'saga-test' });
    cleanups.push(() => bus.close());
    const repository = () => {
      const r = o.repository(id);
      cleanups.push(() => r.close?.());
      return r;
    };
    const repo = repository();
    return {
      bus,
      repo,
      prefix,
      repository,
      orchestrator(options) {
        const orch = new SagaOrchestrator({
          bus,
          repository: repo,
          logger: silentLogger,
          topicPrefix: `${prefix}saga`,
          ...options,
        });
        cleanups.push(() => orch.close());
        return orch;
      },
      async observe() {
        const events: { data: SagaEvent; topic: string; workflowid: string | undefined }[] = [];
        const sub = await bus.subscribe<SagaEvent>(`${prefix}saga.>`, (d) => {
          events.push({ data: d.data, topic: d.envelope.topic, workflowid: d.envelope.workflowid });
        });
        cleanups.push(() => sub.close());
        return events;
      },
      defer(cleanup) {
        cleanups.push(cleanup);
      },
      hold() {
        const g = gate();
        gates.push(() => g.open());
        return g;
      },
    };
  };
}
