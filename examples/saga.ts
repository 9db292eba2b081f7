// A trip-booking saga on the embedded store: a flights agent and a hotels agent answer requests,
// the orchestrator books a flight, a hotel and takes the payment; when the hotel is full the flight
// is cancelled (compensation, with the booking's result). Then an orchestrator stops half-way and
// another one over the same file resumes the saga from its persisted state.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  createBus,
  defineSaga,
  type SagaCompensationContext,
  type SagaEvent,
  sagaOrchestrator,
  silentLogger,
  UnrecoverableError,
} from '@agentbus/core';
import { sqliteSagaRepository, sqliteTransport } from '@agentbus/sqlite';

const dir = mkdtempSync(join(tmpdir(), 'agentbus-example-'));
const path = join(dir, 'bus.db');

// The agents: another process in real life; here a bus of their own on the same file.
const agents = createBus({ transport: sqliteTransport({ path }), source: 'travel-agents', logger: silentLogger });
let seats = 0;
await agents.reply<{ to: string }>('flights.book', (d) => ({ flight: `AB${100 + ++seats}`, to: d.data.to }));
await agents.reply<{ flight: string }>('flights.cancel', (d) => {
  console.log(`  flights agent: cancelled ${d.data.flight}`);
  return { cancelled: d.data.flight };
});
await agents.reply<{ city: string }>('hotels.book', (d) => {
  if (d.data.city === 'Venice') throw new UnrecoverableError('no room left in Venice');
  return { hotel: `Hotel ${d.data.city}` };
});

interface Trip {
  traveller: string;
  city: string;
  price?: number;
}

let stopAtPayment = false;
const trip = defineSaga<Trip>({
  name: 'trip',
  steps: [
    {
      name: 'flight',
      action: { topic: 'flights.book', data: (ctx) => ({ to: ctx.payload.city }) },
      compensate: {
        topic: 'flights.cancel',
        data: (ctx: SagaCompensationContext<Trip, { flight: string }>) => ({ flight: ctx.result?.flight }),
      },
      timeoutMs: 5_000,
    },
    { name: 'hotel', action: { topic: 'hotels.book', data: (ctx) => ({ city: ctx.payload.city }) }, timeoutMs: 5_000 },
    {
      name: 'payment',
      action: async (ctx) => {
        if (stopAtPayment) await new Promise((r) => setTimeout(r, 100)); // still paying when the orchestrator stops
        ctx.payload.price = 420; // the shared payload is saved with the step
        return { receipt: `R-${ctx.sagaId.slice(-6)}` };
      },
    },
  ],
});

const bus = createBus({ transport: sqliteTransport({ path }), source: 'orchestrator', logger: silentLogger });
// An observer: saga events arrive on saga.<name>.<event> with the saga id as workflowid.
const events = new Map<string, string[]>();
await bus.subscribe<SagaEvent>('saga.trip.>', (d) => {
  const e = d.data;
  const list = events.get(e.sagaId) ?? [];
  list.push(`${e.event}${e.step ? ` ${e.step}` : ''}`);
  events.set(e.sagaId, list);
});
/** The events of a saga, once its last one has arrived. */
const eventsOf = async (sagaId: string) => {
  const final = (l: string[]) => l.some((e) => ['completed', 'compensated', 'failed'].includes(e));
  while (!final(events.get(sagaId) ?? [])) await new Promise((r) => setTimeout(r, 10));
  return (events.get(sagaId) ?? []).join(' → ');
};
const repository = sqliteSagaRepository({ path });
const first = sagaOrchestrator({ bus, repository, sagas: [trip], logger: silentLogger });

console.log('Ada goes to Lisbon:');
const lisbon = await first.wait(await first.start('trip', { traveller: 'Ada', city: 'Lisbon' }));
console.log(`→ ${lisbon.status}: ${JSON.stringify(lisbon.steps.map((s) => s.result))}`);
console.log(`  events: ${await eventsOf(lisbon.id)}`);

console.log('Grace goes to Venice (the hotel is full):');
const venice = await first.wait(await first.start('trip', { traveller: 'Grace', city: 'Venice' }));
console.log(`→ ${venice.status}: ${venice.error?.message}; steps ${venice.steps.map((s) => s.status).join(', ')}`);
console.log(`  events: ${await eventsOf(venice.id)}`);

console.log('Linus goes to Oslo; the orchestrator stops during the payment:');
stopAtPayment = true;
const id = await first.start('trip', { traveller: 'Linus', city: 'Oslo' });
while ((await first.get(id))?.steps[2]?.status !== 'running') await new Promise((r) => setTimeout(r, 10));
await first.close(); // the payment finishes and is saved, then the saga is released
const left = await repository.get(id);
console.log(`  left ${left?.status}: ${left?.steps.map((s) => `${s.name} ${s.status}`).join(', ')}`);
const second = sagaOrchestrator({ bus, repository, sagas: [trip], logger: silentLogger });
console.log('  a new orchestrator resumes', await second.resume());
const oslo = await second.wait(id);
console.log(`→ ${oslo.status}, price ${(oslo.payload as Trip).price}`);
console.log(`  events: ${await eventsOf(oslo.id)}`);

await second.close();
await bus.close();
await agents.close();
repository.close();
rmSync(dir, { recursive: true, force: true });
