// Agent tasks on the embedded store: a travel agent executes tasks with the A2A lifecycle
// (submitted → working ⇄ input-required → completed / canceled); an assistant starts them, follows
// their updates, disconnects and resumes from its cursor in a "new process", answers a question,
// and cancels a task. Each side has its own bus and store on one SQLite file, as two processes would.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  type Bus,
  createBus,
  messageText,
  silentLogger,
  type TaskUpdate,
  taskClient,
  taskServer,
} from '@agentbus/core';
import { sqliteEventStore, sqliteTransport } from '@agentbus/sqlite';

const dir = mkdtempSync(join(tmpdir(), 'agentbus-example-'));
const path = join(dir, 'bus.db');
const open = (source: string) => ({
  bus: createBus({ transport: sqliteTransport({ path }), source, logger: silentLogger }),
  store: sqliteEventStore({ path, logger: silentLogger }),
});

/** A pause standing in for a model call; ends early when `signal` aborts. */
const think = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => {
      clearTimeout(timer);
      reject(signal.reason);
    });
  });

function show(who: string, u: TaskUpdate): void {
  const what =
    u.kind === 'artifact'
      ? `artifact ${u.artifact.artifactId}${u.append ? ' (+chunk)' : ''}: ${messageText(u.artifact)}`
      : `${u.status.state}${u.status.message ? ` — ${u.status.message.role}: ${messageText(u.status.message)}` : ''}`;
  console.log(`${who} #${u.cursor} ${what}`);
}

// The executor: a travel agent.
const agent = open('travel-agent');
const server = await taskServer(agent.bus, {
  agentId: 'travel-agent',
  store: agent.store,
  logger: silentLogger,
  handler: async (task, ctx) => {
    const request = messageText(task.history[0]);
    if (request.startsWith('Book')) {
      await ctx.update('working', 'searching flights');
      try {
        await think(60_000, ctx.signal); // a long call, cut short by a cancel
      } catch (err) {
        console.log(`travel-agent: stopped working on "${request}" (${(err as Error).message})`);
        throw err;
      }
    }
    await ctx.update('working', 'looking at options');
    await ctx.artifact({
      artifactId: 'itinerary',
      name: 'itinerary.md',
      parts: [{ kind: 'text', text: 'Fri: train' }],
    });
    const city = messageText(await ctx.requestInput('Lisbon or Oslo?'));
    for (const line of [`Sat: ${city} old town`, `Sun: ${city} by the water`]) {
      await think(20, ctx.signal);
      await ctx.artifact({ artifactId: 'itinerary', parts: [{ kind: 'text', text: line }] }, { append: true });
    }
    return `Have a good weekend in ${city}!`;
  },
});

// The caller: an assistant. It follows the task until the agent asks something, then "crashes".
const first = open('assistant');
const assistant = taskClient(first.bus, { store: first.store });
const trip = await assistant.start('travel-agent', 'Plan a weekend trip');
let cursor = 0;
for await (const u of trip.updates()) {
  show('assistant', u);
  cursor = u.cursor;
  if (u.kind === 'status' && u.status.state === 'input-required') break;
}
console.log(`assistant: disconnects at cursor ${cursor}`);
await closeCaller(first.bus, first.store, assistant);

// A new assistant process knows the task id and its cursor: it answers, then resumes the stream.
const second = open('assistant');
const resumed = taskClient(second.bus, { store: second.store });
await resumed.answer(trip.id, 'Lisbon');
for await (const u of resumed.updates(trip.id, { after: cursor })) show('assistant (resumed)', u);
const done = await resumed.get(trip.id);
console.log(`itinerary:\n  ${messageText(done?.artifacts[0]).replaceAll('\n', '\n  ')}`);

// Another task, canceled while the agent works on it.
const flights = await resumed.start('travel-agent', 'Book flights to Lisbon');
for await (const u of flights.updates()) {
  show('assistant', u);
  if (u.kind === 'status' && u.status.message?.parts.some((p) => p.kind === 'text' && p.text === 'searching flights')) {
    await flights.cancel({ reason: 'found a train instead' });
  }
}

await server.close();
await closeCaller(second.bus, second.store, resumed);
await agent.bus.close();
await agent.store.close();
rmSync(dir, { recursive: true, force: true });

async function closeCaller(bus: Bus, store: { close(): Promise<void> }, client: { close(): Promise<void> }) {
  await client.close();
  await bus.close();
  await store.close();
}
