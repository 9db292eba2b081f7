import { until } from '@agentbus/conformance';
import {
  assertTransition,
  type Bus,
  canTransition,
  createBus,
  type EventStore,
  type MemoryTransport,
  memoryEventStore,
  memoryTransport,
  messageText,
  silentLogger,
  type TaskClient,
  type TaskHandler,
  TaskNotFoundError,
  type TaskServer,
  TaskStateError,
  type TaskUpdate,
  taskClient,
  taskServer,
  ValidationError,
} from '@agentbus/core';
import { afterEach, describe, expect, it } from 'vitest';

/** Both sides poll the store only once a minute: every test sees updates live through the bus nudges. */
const NO_POLL = 60_000;

function deferred<T = void>(): { promise: Promise<T>; resolve: (v: T) => void } {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

interface World {
  transport: MemoryTransport;
  store: EventStore;
  executorBus: Bus;
  callerBus: Bus;
  server: TaskServer;
  client: TaskClient;
}

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function bus(transport: MemoryTransport, source: string): Bus {
  const b = createBus({ transport, ownsTransport: false, logger: silentLogger, source });
  cleanups.push(() => b.close());
  return b;
}

async function world(handler: TaskHandler, clientPollMs = NO_POLL): Promise<World> {
  const transport = memoryTransport();
  const store = memoryEventStore();
  cleanups.push(async () => {
    await store.close();
    await transport.close();
  });
  const executorBus = bus(transport, 'executor');
  const callerBus = bus(transport, 'caller');
  const server = await startServer(executorBus, store, handler);
  const client = taskClient(callerBus, { store, pollIntervalMs: clientPollMs });
  cleanups.push(() => client.close());
  return { transport, store, executorBus, callerBus, server, client };
}

async function startServer(b: Bus, store: EventStore, handler: TaskHandler): Promise<TaskServer> {
  const server = await taskServer(b, {
    agentId: 'writer',
    store,
    handler,
    pollIntervalMs: NO_POLL,
    handBackDelayMs: 0,
    logger: silentLogger,
  });
  cleanups.push(() => server.close());
  return server;
}

async function collect(updates: AsyncIterable<TaskUpdate>): Promise<TaskUpdate[]> {
  const out: TaskUpdate[] = [];
  for await (const u of updates) out.push(u);
  return out;
}

/** `state` for status updates, `artifact:<id>` for artifacts. */
function shape(u: TaskUpdate): string {
  return u.kind === 'status' ? `${u.status.state}${u.final ? '!' : ''}` : `artifact:${u.artifact.artifactId}`;
}

describe('agent tasks', () => {
  it('runs a task submitted → working → completed, streaming artifacts in chunks', async () => {
    const { client } = await world(async (task, ctx) => {
      await ctx.update('working', 'drafting');
      await ctx.artifact({ artifactId: 'draft', name: 'draft.md', parts: [{ kind: 'text', text: 'Hello' }] });
      await ctx.artifact(
        { artifactId: 'draft', parts: [{ kind: 'text', text: ', world' }] },
        { append: true, lastChunk: true },
      );
      return `done: ${messageText(task.history[0])}`;
    });
    const handle = await client.start('writer', 'write a greeting', { contextId: 'ctx-1', metadata: { user: 'ada' } });
    expect(handle.task?.status.state).toBe('submitted');
    const updates = await collect(handle.updates());
    expect(updates.map(shape)).toEqual([
      'submitted',
      'working',
      'working',
      'artifact:draft',
      'artifact:draft',
      'completed!',
    ]);
    expect(updates.map((u) => u.cursor)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(updates.every((u) => u.taskId === handle.id)).toBe(true);
    expect(updates[4]).toMatchObject({ kind: 'artifact', append: true, lastChunk: true });
    const task = await handle.get();
    expect(task).toMatchObject({
      id: handle.id,
      contextId: 'ctx-1',
      agentId: 'writer',
      metadata: { user: 'ada' },
      status: { state: 'completed' },
      artifacts: [{ artifactId: 'draft', name: 'draft.md', parts: [{ text: 'Hello' }, { text: ', world' }] }],
      cursor: 6,
    });
    expect(messageText(task?.status.message)).toBe('done: write a greeting');
    expect(task?.history.map((m) => [m.role, messageText(m)])).toEqual([
      ['user', 'write a greeting'],
      ['agent', 'drafting'],
      ['agent', 'done: write a greeting'],
    ]);
    expect(await handle.wait()).toMatchObject({ status: { state: 'completed' } });
  });

  it('asks for input: the handler waits for the answer and goes on with it', async () => {
    const { client } = await world(async (_task, ctx) => {
      const city = await ctx.requestInput('Which city?');
      await ctx.artifact({ artifactId: 'plan', parts: [{ kind: 'text', text: `trip to ${messageText(city)}` }] });
      return 'planned';
    });
    const handle = await client.start('writer', 'plan a trip');
    const seen: TaskUpdate[] = [];
    for await (const u of handle.updates()) {
      seen.push(u);
      if (u.kind === 'status' && u.status.state === 'input-required') {
        expect(messageText(u.status.message)).toBe('Which city?');
        expect((await handle.get())?.status.state).toBe('input-required');
        await handle.answer('Lisbon');
      }
    }
    expect(seen.map(shape)).toEqual([
      'submitted',
      'working',
      'input-required',
      'working',
      'artifact:plan',
      'completed!',
    ]);
    const answered = seen[3];
    expect(answered?.kind === 'status' && answered.status.message).toMatchObject({
      role: 'user',
      parts: [{ text: 'Lisbon' }],
    });
    const task = await handle.get();
    expect(task?.artifacts[0]?.parts).toEqual([{ kind: 'text', text: 'trip to Lisbon' }]);
    expect(task?.history.map(messageText)).toEqual(['plan a trip', 'Which city?', 'Lisbon', 'planned']);
  });

  it("cancels a running task: the handler's signal is aborted and the task ends canceled", async () => {
    const started = deferred();
    let reason: unknown;
    const { client, server } = await world(async (_task, ctx) => {
      await ctx.update('working', 'thinking hard');
      started.resolve();
      await new Promise((_, reject) => {
        ctx.signal.addEventListener('abort', () => {
          reason = ctx.signal.reason;
          reject(ctx.signal.reason);
        });
      });
    });
    const handle = await client.start('writer', 'think forever');
    await started.promise;
    expect(server.running).toBe(1);
    const canceled = await handle.cancel({ reason: 'changed my mind' });
    expect(canceled.status).toMatchObject({ state: 'canceled', message: { role: 'user' } });
    await until(() => reason !== undefined, 5_000, 'the handler to see the abort');
    expect(reason).toBeInstanceOf(TaskStateError);
    expect((reason as TaskStateError).data).toMatchObject({ taskId: handle.id, state: 'canceled' });
    await until(() => server.running === 0, 5_000, 'the run to end');
    const updates = await collect(handle.updates());
    expect(updates.map(shape)).toEqual(['submitted', 'working', 'working', 'canceled!']);
    expect((await handle.wait()).status.state).toBe('canceled');
    expect((await handle.cancel()).status.state).toBe('canceled'); // canceling again is a no-op
  });

  it('refuses illegal transitions with TaskStateError', async () => {
    expect(canTransition('working', 'input-required')).toBe(true);
    expect(canTransition('completed', 'working')).toBe(false);
    expect(canTransition('submitted', 'completed')).toBe(false);
    expect(() => assertTransition('t1', 'failed', 'working')).toThrow(TaskStateError);
    const late: unknown[] = [];
    const { client } = await world(async (task, ctx) => {
      if (messageText(task.history[0]) === 'wait') {
        const answered = ctx.requestInput('ok?');
        // Only the caller's answer moves an input-required task on.
        late.push(await ctx.update('working', 'moving on').catch((e: unknown) => e));
        await answered;
        return;
      }
      late.push(await ctx.update('submitted' as 'working').catch((e: unknown) => e));
      await ctx.update('completed', 'all done');
      late.push(await ctx.update('working', 'one more thing').catch((e: unknown) => e));
      late.push(await ctx.artifact({ artifactId: 'x', parts: [{ kind: 'text', text: 'x' }] }).catch((e: unknown) => e));
    });
    const done = await client.start('writer', 'finish', { taskId: 'finish-1' });
    expect((await done.wait()).status.state).toBe('completed');
    expect(late[0]).toBeInstanceOf(ValidationError);
    expect(late[1]).toBeInstanceOf(TaskStateError);
    expect((late[1] as TaskStateError).data).toEqual({ taskId: 'finish-1', state: 'completed', attempted: 'working' });
    expect(late[2]).toBeInstanceOf(TaskStateError);
    const updates = await collect(done.updates());
    expect(updates.map(shape)).toEqual(['submitted', 'working', 'completed!']);

    const cancelDone = await done.cancel().catch((e: unknown) => e);
    expect(cancelDone).toBeInstanceOf(TaskStateError);
    expect((cancelDone as TaskStateError).data).toMatchObject({ state: 'completed', attempted: 'canceled' });
    const answerDone = await done.answer('too late').catch((e: unknown) => e);
    expect(answerDone).toBeInstanceOf(TaskStateError);
    const taken = await client.start('writer', 'again', { taskId: 'finish-1' }).catch((e: unknown) => e);
    expect(taken).toBeInstanceOf(TaskStateError);
    expect((taken as TaskStateError).data).toMatchObject({ attempted: 'start' });

    const waiting = await client.start('writer', 'wait');
    await until(async () => (await waiting.get())?.status.state === 'input-required', 5_000, 'input-required');
    await waiting.answer('yes');
    const twice = await waiting.answer('yes again').catch((e: unknown) => e);
    expect(twice).toBeInstanceOf(TaskStateError);
    expect((await waiting.wait()).status.state).toBe('completed');
    expect(late[3]).toBeInstanceOf(TaskStateError);
    expect((late[3] as TaskStateError).data).toMatchObject({ state: 'input-required', attempted: 'working' });

    await expect(client.answer('no-such-task', 'hi')).rejects.toBeInstanceOf(TaskNotFoundError);
    await expect(collect(client.updates('no-such-task'))).rejects.toBeInstanceOf(TaskNotFoundError);
    await expect(client.start('writer', 'x', { taskId: 'bad id' })).rejects.toBeInstanceOf(ValidationError);
  });

  it('ends a task failed with the error of a handler that throws', async () => {
    const { client } = await world(async (_task, ctx) => {
      await ctx.update('working', 'calling the model');
      throw new Error('model quota exceeded');
    });
    const handle = await client.start('writer', 'x');
    const updates = await collect(handle.updates());
    expect(updates.map(shape)).toEqual(['submitted', 'working', 'working', 'failed!']);
    const last = updates.at(-1);
    expect(last?.kind === 'status' && messageText(last.status.message)).toBe('model quota exceeded');
  });

  it('ends a task rejected when its handler refuses it', async () => {
    const { client } = await world(async (_task, ctx) => {
      await ctx.update('rejected', 'not something I do');
    });
    const handle = await client.start('writer', 'fix my car');
    const updates = await collect(handle.updates());
    expect(updates.map(shape)).toEqual(['submitted', 'working', 'rejected!']);
    expect(messageText((await handle.get())?.status.message)).toBe('not something I do');
  });

  it('takes a start repeated with the same message id once', async () => {
    let runs = 0;
    const { client } = await world(() => {
      runs++;
      return 'ok';
    });
    const input = { parts: [{ kind: 'text' as const, text: 'once' }], messageId: 'msg-1' };
    const first = await client.start('writer', input, { taskId: 'once-1' });
    await first.wait();
    const again = await client.start('writer', input, { taskId: 'once-1' });
    expect(again.task?.status.state).toBe('completed');
    expect(runs).toBe(1);
  });

  it('resumes from a cursor with exactly the updates missed during a disconnect, then the live ones', async () => {
    const gates = Array.from({ length: 6 }, () => deferred());
    const { client } = await world(async (_task, ctx) => {
      for (const [i, gate] of gates.entries()) {
        await gate.promise;
        await ctx.artifact(
          { artifactId: 'log', parts: [{ kind: 'text', text: `chunk ${i}` }] },
          { append: i > 0, lastChunk: i === gates.length - 1 },
        );
      }
      return 'ok';
    });
    cleanups.push(async () => {
      for (const g of gates) g.resolve(); // a failed test must not leave the handler waiting
    });
    const handle = await client.start('writer', 'stream');
    gates[0]?.resolve();
    gates[1]?.resolve();
    const before: TaskUpdate[] = [];
    for await (const u of handle.updates()) {
      before.push(u);
      if (u.kind === 'artifact' && messageText(u.artifact) === 'chunk 1') break; // the caller disconnects
    }
    const lastCursor = before.at(-1)?.cursor ?? 0;
    // While nobody listens, the executor goes on.
    for (const g of gates.slice(2, 5)) g.resolve();
    await until(async () => (await handle.get())?.artifacts[0]?.parts.length === 5, 5_000, 'chunks 2–4 stored');
    const after: TaskUpdate[] = [];
    for await (const u of handle.updates({ after: lastCursor })) {
      after.push(u);
      if (u.kind === 'artifact' && messageText(u.artifact) === 'chunk 4') gates[5]?.resolve(); // the rest comes live
    }
    expect(after.map((u) => (u.kind === 'artifact' ? messageText(u.artifact) : shape(u)))).toEqual([
      'chunk 2',
      'chunk 3',
      'chunk 4',
      'chunk 5',
      'completed!',
    ]);
    expect(after.map((u) => u.cursor)).toEqual([1, 2, 3, 4, 5].map((k) => lastCursor + k));
    expect([...before, ...after]).toEqual(await collect(handle.updates()));
    expect(await collect(handle.updates({ after: after.at(-1)?.cursor ?? 0 }))).toEqual([]);
  });

  it('survives a restart of the caller: a new client over the same store resumes and answers', async () => {
    const { client, transport, store } = await world(async (_task, ctx) => {
      const answer = await ctx.requestInput('Proceed?');
      return `answered ${messageText(answer)}`;
    });
    const handle = await client.start('writer', 'deploy');
    let cursor = 0;
    for await (const u of handle.updates()) {
      cursor = u.cursor;
      if (u.kind === 'status' && u.status.state === 'input-required') break;
    }
    await client.close();
    // A new caller process: its own bus and client, the same store; it knows only the task id and its cursor.
    const client2 = taskClient(bus(transport, 'caller-2'), { store, pollIntervalMs: NO_POLL });
    cleanups.push(() => client2.close());
    const resumed = client2.handle(handle.id);
    const updates: TaskUpdate[] = [];
    const following = (async () => {
      for await (const u of resumed.updates({ after: cursor })) updates.push(u);
    })();
    await resumed.answer('yes');
    await following;
    expect(updates.map(shape)).toEqual(['working', 'completed!']);
    expect(messageText((await resumed.get())?.status.message)).toBe('answered yes');
  });

  it('resumes a task on a restarted executor between input-required and the answer, without repeating its updates', async () => {
    const runs: boolean[] = [];
    const handler: TaskHandler = async (_task, ctx) => {
      runs.push(ctx.resumed);
      await ctx.update('working', 'looking up flights');
      await ctx.artifact({ artifactId: 'notes', parts: [{ kind: 'text', text: '3 flights found' }] });
      const city = await ctx.requestInput('Which city?');
      await ctx.artifact({ artifactId: 'booking', parts: [{ kind: 'text', text: messageText(city) }] });
      return `booked ${messageText(city)}`;
    };
    const { client, server, transport, store } = await world(handler);
    const handle = await client.start('writer', 'book a flight');
    await until(async () => (await handle.get())?.status.state === 'input-required', 5_000, 'input-required');
    await server.close(); // the executor stops while its handler waits for the answer
    expect(server.running).toBe(0);
    const server2 = await startServer(bus(transport, 'executor-2'), store, handler);
    await until(() => server2.running === 1, 5_000, 'the task resumed on the new executor');
    await handle.answer('Oslo');
    const task = await handle.wait();
    expect(messageText(task.status.message)).toBe('booked Oslo');
    expect(runs).toEqual([false, true]);
    const updates = await collect(handle.updates());
    expect(updates.map(shape)).toEqual([
      'submitted',
      'working',
      'working',
      'artifact:notes',
      'input-required',
      'working',
      'artifact:booking',
      'completed!',
    ]);
  });

  it('catches up by polling the store when nudges are lost', async () => {
    const transport = memoryTransport();
    const store = memoryEventStore();
    cleanups.push(async () => {
      await store.close();
      await transport.close();
    });
    const executorBus = bus(transport, 'executor');
    // The executor's nudges never leave it.
    executorBus.use({
      name: 'drop-nudges',
      publish: async (ctx, next) => {
        if (!ctx.envelope.topic.startsWith('_task.')) await next();
      },
    });
    const release = deferred();
    await startServer(executorBus, store, async (_task, ctx) => {
      await release.promise;
      await ctx.update('working', 'step');
      return 'done';
    });
    const client = taskClient(bus(transport, 'caller'), { store, pollIntervalMs: 20 });
    cleanups.push(() => client.close());
    const handle = await client.start('writer', 'x');
    const updates = collect(handle.updates());
    release.resolve();
    expect((await updates).map(shape)).toEqual(['submitted', 'working', 'working', 'completed!']);
  });

  it('ends the update streams of a closed client, and of an aborted signal', async () => {
    const { client } = await world(async (_task, ctx) => {
      await ctx.requestInput('never answered');
    });
    const handle = await client.start('writer', 'x');
    const abort = new AbortController();
    const first: TaskUpdate[] = [];
    const aborted = (async () => {
      for await (const u of handle.updates({ signal: abort.signal })) {
        first.push(u);
        if (u.kind === 'status' && u.status.state === 'input-required') abort.abort();
      }
    })();
    await aborted;
    expect(first.map(shape)).toEqual(['submitted', 'working', 'input-required']);
    const second: TaskUpdate[] = [];
    const open = (async () => {
      for await (const u of handle.updates()) second.push(u);
    })();
    await until(() => second.length === 3, 5_000, 'the stored updates');
    await client.close();
    await open;
    expect(second.map(shape)).toEqual(['submitted', 'working', 'input-required']);
  });
});
