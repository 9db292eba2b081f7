// Group chat on the embedded store: a moderator gives three agents turns until one says TERMINATE.
// Every agent, the moderator and the observer use their own connection to one SQLite file, as
// separate processes would; the conversation is the event stream `chat-launch` in the same file.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  type Bus,
  type ChatTurn,
  chatParticipant,
  createBus,
  followChat,
  groupChat,
  readChat,
  selector,
  silentLogger,
} from '@agentbus/core';
import { sqliteEventStore, sqliteTransport } from '@agentbus/sqlite';

const dir = mkdtempSync(join(tmpdir(), 'agentbus-example-'));
const path = join(dir, 'bus.db');
const buses: Bus[] = [];
const open = (source: string) => {
  const bus = createBus({ transport: sqliteTransport({ path, pollIntervalMs: 10 }), source, logger: silentLogger });
  buses.push(bus);
  return bus;
};

// Stand-ins for model calls: each agent answers from the conversation so far.
const scripts: Record<string, (history: readonly ChatTurn[]) => string> = {
  planner: () => 'Plan: a tagline first, then the launch post. @writer, a tagline please.',
  writer: (h) =>
    h.some((t) => t.speaker === 'writer')
      ? 'Tagline: "Agents crash. Messages don\'t." @critic?'
      : 'Tagline: "A message bus whose messages outlive your agents\' crashes and restarts." @critic?',
  critic: (h) =>
    h.filter((t) => t.speaker === 'critic').length === 0 ? 'Too long. @writer, shorter please.' : 'Ship it. TERMINATE',
};
const agents = [];
for (const agentId of Object.keys(scripts)) {
  agents.push(
    await chatParticipant(open(agentId), { agentId, respond: (history) => scripts[agentId]?.(history) ?? '' }),
  );
}

// An observer with a store connection of its own follows the chat live, from the start.
const observerStore = sqliteEventStore({ path, logger: silentLogger });
const following = (async () => {
  for await (const e of followChat(observerStore, 'launch')) {
    if (e.kind === 'turn') console.log(`#${e.turn} ${e.speaker}: ${e.content}`);
    else console.log(`-- ended: ${e.reason} after ${e.turns} turns (${e.note ?? ''})`);
  }
})();

// The moderator: the next speaker is whoever the last turn @-mentions (an LLM could choose instead).
const moderatorBus = open('moderator');
const store = sqliteEventStore({ path, logger: silentLogger });
const chat = groupChat(moderatorBus, {
  id: 'launch',
  participants: ['planner', 'writer', 'critic'],
  store,
  selectSpeaker: selector((history) => history.at(-1)?.content.match(/@(\w+)/)?.[1] ?? 'planner'),
  stopWhen: 'TERMINATE',
  maxTurns: 10,
});
await chat.start('We launch agentbus on Monday. Agree on a tagline; say TERMINATE when done.');
const end = await chat.done;
await following;

// The history stays in the file: anyone can read it from any turn.
const fromTurn = 4;
const later = await readChat(observerStore, 'launch', { fromTurn });
console.log(`history from turn ${fromTurn}: ${later.map((t) => t.speaker).join(', ')}; ended: ${end.reason}`);

await chat.close();
for (const a of agents) await a.close();
for (const bus of buses) await bus.close();
await store.close();
await observerStore.close();
rmSync(dir, { recursive: true, force: true });
