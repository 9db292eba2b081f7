import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { agentTaskConformance, until } from '@agentbus/conformance';
import {
  createBus,
  messageText,
  silentLogger,
  type TaskHandler,
  type TaskUpdate,
  taskClient,
  taskServer,
} from '@agentbus/core';
import { sqliteEventStore, sqliteTransport } from '@agentbus/sqlite';
import { afterAll, describe, expect, it } from 'vitest';

const dir = mkdtempSync(join(tmpdir(), 'agentbus-at-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

// Every bus and store is a separate client of one file (the store's tables beside the bus's), as
// separate processes would be: the restarted executor reads what the first one stored.
agentTaskConformance({
  name: 'SQLite',
  open: () => sqliteTransport({ path: join(dir, 'bus.db'), pollIntervalMs: 10 }),
  openStore: () => sqliteEventStore({ path: join(dir, 'bus.db'), logger: silentLogger }),
});

/** The executor of fixtures/agent-task-executor.ts in a process of its own. */
function startExecutor(path: string, agentId: string, ackTimeoutMs: number) {
  const script = fileURLToPath(new URL('./fixtures/agent-task-executor.ts', import.meta.url));
  const child = spawn(
    process.execPath,
    ['--conditions=source', '--import', 'tsx', script, path, agentId, String(ackTimeoutMs)],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk;
  });
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk;
  });
  const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
  return { child, exited, ready: () => stdout.includes('"ready"'), stderr: () => stderr };
}

describe('agent tasks on SQLite across processes', () => {
  it('resumes a task on a new executor after its executor process was SIGKILLed while waiting for input', async () => {
    const path = join(dir, 'killed.db');
    const agentId = 'drafter';
    const ackTimeoutMs = 1_000;
    const resumed: boolean[] = [];
    // The fixture's handler, here recording whether it runs resumed.
    const handler: TaskHandler = async (_task, ctx) => {
      resumed.push(ctx.resumed);
      await ctx.update('working', 'drafting');
      await ctx.artifact({ artifactId: 'draft', parts: [{ kind: 'text', text: 'v1' }] });
      const answer = await ctx.requestInput('Publish?');
      await ctx.artifact({ artifactId: 'final', parts: [{ kind: 'text', text: `v1 (${messageText(answer)})` }] });
      return 'published';
    };
    const callerBus = createBus({ transport: sqliteTransport({ path, pollIntervalMs: 10 }), logger: silentLogger });
    const callerStore = sqliteEventStore({ path, logger: silentLogger });
    const client = taskClient(callerBus, { store: callerStore, pollIntervalMs: 60_000 });
    const executorBus = createBus({ transport: sqliteTransport({ path, pollIntervalMs: 10 }), logger: silentLogger });
    const executorStore = sqliteEventStore({ path, logger: silentLogger });
    const first = startExecutor(path, agentId, ackTimeoutMs);
    let second: Awaited<ReturnType<typeof taskServer>> | undefined;
    try {
      await until(first.ready, 20_000, `the executor process (${first.stderr()})`);
      const handle = await client.start(agentId, 'draft and publish');
      const seen: TaskUpdate[] = [];
      const following = (async () => {
        for await (const u of handle.updates()) seen.push(u);
      })();
      await until(
        () => {
          const u = seen.at(-1);
          return u?.kind === 'status' && u.status.state === 'input-required';
        },
        20_000,
        'the question',
      );
      first.child.kill('SIGKILL');
      expect(await first.exited).toBeNull();
      // The run message is still leased to the dead process: it comes back when the lease runs out.
      second = await taskServer(executorBus, {
        agentId,
        store: executorStore,
        handler,
        ackTimeoutMs,
        logger: silentLogger,
      });
      await until(() => second?.running === 1, 20_000, 'the task to resume on the new executor');
      await handle.answer('yes');
      await following;
      expect(resumed).toEqual([true]);
      expect(seen.map((u) => (u.kind === 'status' ? u.status.state : `artifact:${u.artifact.artifactId}`))).toEqual([
        'submitted',
        'working',
        'working',
        'artifact:draft',
        'input-required',
        'working',
        'artifact:final',
        'completed',
      ]);
      const task = await handle.get();
      expect(task?.artifacts.map((a) => messageText(a))).toEqual(['v1', 'v1 (yes)']);
      expect(messageText(task?.status.message)).toBe('published');
    } finally {
      first.child.kill('SIGKILL');
      await first.exited;
      await second?.close();
      await client.close();
      await Promise.all([callerBus.close(), executorBus.close()]);
      await Promise.all([callerStore.close(), executorStore.close()]);
    }
  });
});
