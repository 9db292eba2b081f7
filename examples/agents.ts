// Agents on the embedded store: an inbox per agent, requests between agents, workspace broadcast,
// presence and discovery. Three buses on one SQLite file, as three processes would be.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type AgentChange, createBus, silentLogger } from '@agentbus/core';
import { sqliteTransport } from '@agentbus/sqlite';

const dir = mkdtempSync(join(tmpdir(), 'agentbus-example-'));
const path = join(dir, 'bus.db');
const open = () => createBus({ transport: sqliteTransport({ path }), logger: silentLogger });
const [researcherBus, writerBus, leadBus] = [open(), open(), open()];

/** A promise and the function that resolves it. */
function later<T = void>(): [Promise<T>, (value: T) => void] {
  let resolve!: (value: T) => void;
  return [new Promise<T>((r) => (resolve = r)), resolve];
}

// The researcher answers questions: what its inbox handler returns is the reply to a request.
const researcher = researcherBus.agent({
  id: 'researcher',
  description: 'Finds sources for a question',
  version: '1.2.0',
  skills: [{ id: 'search', name: 'Search the web', tags: ['web'] }],
});
await researcher.inbox<{ question: string }>((d) => {
  console.log(`researcher: ${d.envelope.source} asks "${d.data.question}"`);
  return { sources: ['https://example.org/a', 'https://example.org/b'] };
});

// The writer takes tasks from its inbox and asks the researcher for sources.
const writer = writerBus.agent({
  id: 'writer',
  description: 'Writes short summaries',
  version: '0.9.0',
  skills: [{ id: 'write', name: 'Write a summary', tags: ['text'] }],
});
let drafted = later<string>();
await writer.inbox<{ topic: string }>(async (d) => {
  const { sources } = await writer.request<{ sources: string[] }>(
    'researcher',
    { question: `sources on ${d.data.topic}?` },
    { timeoutMs: 10_000 },
  );
  console.log(`writer: drafted "${d.data.topic}" from ${sources.length} sources (task from ${d.envelope.source})`);
  drafted[1](d.data.topic);
});

// Both listen to workspace broadcasts, each in a group of its own.
const [researcherHeard, researcherHears] = later();
const [writerHeard, writerHears] = later();
await researcher.onBroadcast<string>((d) => {
  console.log(`researcher: heard "${d.data}" from ${d.envelope.source}`);
  researcherHears();
});
await writer.onBroadcast<string>((d) => {
  console.log(`writer: heard "${d.data}" from ${d.envelope.source}`);
  writerHears();
});

await researcher.start();
await writer.start();

// The lead looks up who is alive (its directory asks running agents to announce themselves).
const lead = leadBus.agent({ id: 'lead', description: 'Hands out work' });
const directory = leadBus.agents;
await directory.waitFor('researcher');
await directory.waitFor('writer');
for (const a of await directory.list()) {
  console.log(
    `directory: ${a.id} v${a.card.version} (${a.card.description}) skills: ${a.card.skills.map((s) => s.id)}`,
  );
}
const [writerInfo] = await directory.list({ skill: 'write' });
if (!writerInfo) throw new Error('no agent can write');

await lead.send(writerInfo.id, { topic: 'message buses for agents' });
await drafted[0];

await lead.broadcast('stand-up in five minutes');
await Promise.all([researcherHeard, writerHeard]);

// The writer stops: the directory drops it at once; a task sent meanwhile waits in its inbox.
const [writerLeft, writerLeaves] = later<AgentChange>();
const off = directory.on('leave', (c) => c.agent.id === 'writer' && writerLeaves(c));
await writer.stop();
console.log(
  `directory: writer left (${(await writerLeft).reason}); alive: ${(await directory.list()).map((a) => a.id)}`,
);
off();

drafted = later<string>();
await lead.send('writer', { topic: 'dead letters' });
console.log('lead: sent a task while the writer is away');
await writer.start();
await drafted[0];
console.log(`directory: alive again: ${(await directory.list()).map((a) => a.id)}`);

// Closing a bus takes its running agents offline first.
await Promise.all([leadBus.close(), writerBus.close(), researcherBus.close()]);
rmSync(dir, { recursive: true, force: true });
