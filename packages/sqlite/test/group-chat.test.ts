import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { groupChatConformance, until } from '@agentbus/conformance';
import {
  type Bus,
  type ChatParticipant,
  chatParticipant,
  createBus,
  groupChat,
  readChat,
  silentLogger,
} from '@agentbus/core';
import { sqliteEventStore, sqliteTransport } from '@agentbus/sqlite';
import { afterAll, describe, expect, it } from 'vitest';

const dir = mkdtempSync(join(tmpdir(), 'agentbus-gc-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

// Every bus and store is a separate client of one file (the store's tables beside the bus's), as
// separate processes would be.
groupChatConformance({
  name: 'SQLite',
  open: () => sqliteTransport({ path: join(dir, 'bus.db'), pollIntervalMs: 10 }),
  openStore: () => sqliteEventStore({ path: join(dir, 'bus.db'), logger: silentLogger }),
});

/** The moderator of fixtures/group-chat-moderator.ts in a process of its own. */
function startModerator(path: string, id: string, maxTurns: number) {
  const script = fileURLToPath(new URL('./fixtures/group-chat-moderator.ts', import.meta.url));
  const child = spawn(
    process.execPath,
    ['--conditions=source', '--import', 'tsx', script, path, id, String(maxTurns)],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
    },
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

describe('group chat on SQLite across processes', () => {
  it('a new moderator resumes a chat whose moderator process was SIGKILLed mid-conversation', async () => {
    const path = join(dir, 'killed.db');
    const id = 'killed';
    const maxTurns = 12;
    const buses: Bus[] = [];
    const agents: ChatParticipant[] = [];
    const asked = new Map<string, number[]>();
    const store = sqliteEventStore({ path, logger: silentLogger });
    let moderator: ReturnType<typeof startModerator> | undefined;
    try {
      for (const agentId of ['a', 'b', 'c']) {
        asked.set(agentId, []);
        const bus = createBus({ transport: sqliteTransport({ path, pollIntervalMs: 10 }), logger: silentLogger });
        buses.push(bus);
        agents.push(
          await chatParticipant(bus, {
            agentId,
            respond: async (_h, ctx) => {
              asked.get(agentId)?.push(ctx.turn);
              await new Promise((r) => setImmediate(r));
              return `${agentId} ${ctx.turn}`;
            },
          }),
        );
      }
      moderator = startModerator(path, id, maxTurns);
      await until(() => moderator?.ready() === true, 20_000, `the moderator process (${moderator.stderr()})`);
      // Killed wherever it is once the conversation is under way: storing a turn, prompting, idle.
      await until(async () => (await store.version(`chat-${id}`)) >= 4, 20_000, 'four turns stored');
      moderator.child.kill('SIGKILL');
      await moderator.exited;
      const killedAt = await store.version(`chat-${id}`);
      expect(killedAt).toBeLessThan(maxTurns);

      const bus = createBus({ transport: sqliteTransport({ path, pollIntervalMs: 10 }), logger: silentLogger });
      buses.push(bus);
      const chat = groupChat(bus, { id, participants: ['a', 'b', 'c'], store, maxTurns, logger: silentLogger });
      await chat.start('go');
      const end = await chat.done;
      expect(end).toMatchObject({ reason: 'max-turns', turns: maxTurns });
      const history = await readChat(store, id);
      expect(history.map((t) => t.turn)).toEqual(Array.from({ length: maxTurns }, (_, i) => i + 1));
      expect(history.map((t) => t.speaker)).toEqual(['user', ...'abcabcabcab'.split('')]);
      expect(history.slice(1).every((t) => t.content === `${t.speaker} ${t.turn}`)).toBe(true);
      // One model call per turn, however the kill fell.
      expect(asked.get('a')).toEqual([2, 5, 8, 11]);
      expect(asked.get('b')).toEqual([3, 6, 9, 12]);
      expect(asked.get('c')).toEqual([4, 7, 10]);
      await chat.close();
    } finally {
      if (moderator && moderator.child.exitCode === null) moderator.child.kill('SIGKILL');
      await Promise.all(agents.map((a) => a.close()));
      await Promise.all(buses.map((b) => b.close()));
      await store.close();
    }
  });
});
