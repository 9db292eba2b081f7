import {
  type Bus,
  createBus,
  type EventStore,
  memoryEventStore,
  messageText,
  silentLogger,
  type TaskClient,
  type TaskHandler,
  type TaskServer,
  TaskStateError,
  type TaskUpdate,
  type Transport,
  taskClient,
  taskServer,
} from '@agentbus/core';
import { afterEach, describe, expect, it } from 'vitest';
import { until } from './wait.js';

export interface AgentTaskConformanceOptions {
  readonly name: string;
  /** A new client of the backend under test (the executor and each caller get their own). */
  readonly open: () => Transport;
  /**
   * A new client of one event store shared by every call (another connection to the same file or
   * server). Default: one in-process memory store per test.
   */
  readonly openStore?: () => EventStore;
  readonly skipReason?: string | undefined;
}

let n = 0;
const uniqueAgent = () => `at${process.pid}x${Date.now().toString(36)}x${n++}`;

/**
 * Neither side polls the store within a test: every update a follower sees live came through a
 * nudge over the transport.
 */
const NO_POLL = 120_000;

/** `state` for status updates (`!` when final), the text for artifacts. */
function shape(u: TaskUpdate): string {
  if (u.kind === 'artifact') return `${u.artifact.artifactId}:${messageText(u.artifact)}`;
  return `${u.status.state}${u.final ? '!' : ''}`;
}

/**
 * Agent tasks end to end on one transport: the executor and each caller on clients of their own,
 * the tasks in one store; updates followed live over the transport, resumed from a cursor by a
 * new caller, a cancel, and a restarted executor resuming a task that waits for its answer.
 */
export function agentTaskConformance(o: AgentTaskConformanceOptions): void {
  describe.skipIf(o.skipReason)(`agent tasks on ${o.name}`, () => {
    const buses: Bus[] = [];
    const servers: TaskServer[] = [];
    const clients: TaskClient[] = [];
    const stores: EventStore[] = [];
    const gates: (() => void)[] = [];
    let memory: EventStore | undefined;

    const store = () => {
      if (!o.openStore) memory ??= memoryEventStore({ logger: silentLogger });
      const s = o.openStore ? o.openStore() : (memory as EventStore);
      stores.push(s);
      return s;
    };
    const bus = (source: string) => {
      const b = createBus({ transport: o.open(), logger: silentLogger, source });
      buses.push(b);
      return b;
    };
    const executor = async (agentId: string, handler: TaskHandler) => {
      const server = await taskServer(bus(agentId), {
        agentId,
        handler,
        store: store(),
        pollIntervalMs: NO_POLL,
        ackTimeoutMs: 10_000,
        logger: silentLogger,
      });
      servers.push(server);
      return server;
    };
    const caller = (source: string) => {
      const client = taskClient(bus(source), { store: store(), pollIntervalMs: NO_POLL, requestTimeoutMs: 15_000 });
      clients.push(client);
      return client;
    };
    const gate = () => {
      let open!: () => void;
      const promise = new Promise<void>((r) => {
        open = r;
      });
      gates.push(open);
      return { promise, open };
    };

    afterEach(async () => {
      for (const open of gates.splice(0)) open();
      await Promise.all(clients.splice(0).map((c) => c.close()));
      await Promise.all(servers.splice(0).map((s) => s.close()));
      await Promise.all(buses.splice(0).map((b) => b.close()));
      await Promise.all(stores.splice(0).map((s) => s.close()));
      await memory?.close();
      memory = undefined;
    });

    it('runs a task across clients: a question answered, artifacts streamed, a new caller resuming from a cursor', async () => {
      const agentId = uniqueAgent();
      const last = gate();
      await executor(agentId, async (_task, ctx) => {
        await ctx.update('working', 'reading sources');
        await ctx.artifact({ artifactId: 'notes', parts: [{ kind: 'text', text: 'n1' }] });
        const year = messageText(await ctx.requestInput('Which year?'));
        await ctx.artifact({ artifactId: 'report', parts: [{ kind: 'text', text: `${year}:a` }] });
        await last.promise;
        await ctx.artifact({ artifactId: 'report', parts: [{ kind: 'text', text: `${year}:b` }] }, { append: true });
        return 'report ready';
      });
      const alice = caller('alice');
      const handle = await alice.start(agentId, 'summarize the year');
      const before: TaskUpdate[] = [];
      for await (const u of handle.updates()) {
        before.push(u);
        if (u.kind === 'status' && u.status.state === 'input-required') break; // alice disconnects
      }
      expect(before.map(shape)).toEqual(['submitted', 'working', 'working', 'notes:n1', 'input-required']);
      const cursor = before.at(-1)?.cursor ?? 0;

      // Another caller (a restarted alice) knows the task id and the cursor only.
      const again = caller('alice-2').handle(handle.id);
      await again.answer('2024');
      await until(async () => (await again.get())?.artifacts.length === 2, 15_000, 'the first report chunk');
      const after: TaskUpdate[] = [];
      for await (const u of again.updates({ after: cursor })) {
        after.push(u);
        if (u.kind === 'artifact' && u.artifact.artifactId === 'report') last.open(); // the rest comes live
      }
      expect(after.map(shape)).toEqual(['working', 'report:2024:a', 'report:2024:b', 'completed!']);
      expect(after.map((u) => u.cursor)).toEqual([1, 2, 3, 4].map((k) => cursor + k));
      const task = await again.get();
      expect(task?.artifacts.map((a) => [a.artifactId, messageText(a)])).toEqual([
        ['notes', 'n1'],
        ['report', '2024:a\n2024:b'],
      ]);
      expect(messageText(task?.status.message)).toBe('report ready');
      expect([...before, ...after]).toEqual(await collect(handle.updates()));
    });

    it('cancels a running task from another client: its handler is aborted and the task ends canceled', async () => {
      const agentId = uniqueAgent();
      let reason: unknown;
      const server = await executor(agentId, async (_task, ctx) => {
        await ctx.update('working', 'thinking');
        await new Promise<void>((resolve) => {
          ctx.signal.addEventListener('abort', () => {
            reason = ctx.signal.reason;
            resolve();
          });
        });
        await ctx.update('working', 'still here'); // refused: the task ended
      });
      const handle = await caller('bob').start(agentId, 'think');
      const seen: TaskUpdate[] = [];
      const following = (async () => {
        for await (const u of handle.updates()) seen.push(u);
      })();
      await until(() => seen.length === 3, 15_000, 'the task to be working');
      const canceled = await caller('carol').cancel(handle.id, { reason: 'not needed' });
      expect(canceled.status.state).toBe('canceled');
      await following;
      expect(seen.map(shape)).toEqual(['submitted', 'working', 'working', 'canceled!']);
      await until(() => reason !== undefined && server.running === 0, 15_000, 'the handler to be aborted');
      expect(reason).toBeInstanceOf(TaskStateError);
      expect(await collect(handle.updates())).toHaveLength(4);
      await expect(handle.answer('too late')).rejects.toBeInstanceOf(TaskStateError);
    });

    it('resumes a task on a restarted executor between input-required and the answer, storing nothing twice', async () => {
      const agentId = uniqueAgent();
      const runs: boolean[] = [];
      const handler: TaskHandler = async (_task, ctx) => {
        runs.push(ctx.resumed);
        await ctx.artifact({ artifactId: 'draft', parts: [{ kind: 'text', text: 'v1' }] });
        const ok = messageText(await ctx.requestInput('Publish?'));
        return ok === 'yes' ? 'published' : 'kept as draft';
      };
      const first = await executor(agentId, handler);
      const handle = await caller('dave').start(agentId, 'write and publish');
      await until(async () => (await handle.get())?.status.state === 'input-required', 15_000, 'the question');
      await first.close(); // the executor stops while its handler waits for the answer
      const second = await executor(agentId, handler);
      await until(() => second.running === 1, 15_000, 'the task to resume on the new executor');
      await handle.answer('yes');
      const task = await handle.wait();
      expect(messageText(task.status.message)).toBe('published');
      expect(runs).toEqual([false, true]);
      expect((await collect(handle.updates())).map(shape)).toEqual([
        'submitted',
        'working',
        'draft:v1',
        'input-required',
        'working',
        'completed!',
      ]);
    });
  });
}

async function collect(updates: AsyncIterable<TaskUpdate>): Promise<TaskUpdate[]> {
  const out: TaskUpdate[] = [];
  for await (const u of updates) out.push(u);
  return out;
}
