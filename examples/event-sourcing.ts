// Event sourcing on the embedded store: orders as event streams in SQLite, optimistic concurrency,
// a projection that resumes from its checkpoint, and a relay that publishes the events on the bus.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  ConcurrencyError,
  createBus,
  eventFromEnvelope,
  eventRelay,
  foldStream,
  type NewEvent,
  projection,
  type StoredEvent,
  silentLogger,
} from '@agentbus/core';
import { sqliteEventStore, sqliteTransport } from '@agentbus/sqlite';

type Order = { status: 'none' | 'placed' | 'paid' | 'shipped'; total: number; paid: number };

function apply(order: Order, e: StoredEvent): Order {
  const data = e.data as { total?: number; amount?: number };
  switch (e.type) {
    case 'order.placed':
      return { ...order, status: 'placed', total: data.total ?? 0 };
    case 'order.paid': {
      const paid = order.paid + (data.amount ?? 0);
      return { ...order, paid, status: paid >= order.total ? 'paid' : order.status };
    }
    case 'order.shipped':
      return { ...order, status: 'shipped' };
    default:
      return order;
  }
}

const dir = mkdtempSync(join(tmpdir(), 'agentbus-example-'));
const path = join(dir, 'bus.db');
// The events, the checkpoints and the bus share one SQLite file.
const store = sqliteEventStore({ path, logger: silentLogger });
const bus = createBus({ transport: sqliteTransport({ path }), source: 'orders-service', logger: silentLogger });

/** A command: rebuild the order, decide, append at the version decided on; retry when someone else was faster. */
async function command(orderId: string, decide: (order: Order) => NewEvent[]): Promise<void> {
  for (;;) {
    const { state, version } = await foldStream(store, orderId, apply, { status: 'none', total: 0, paid: 0 });
    const events = decide(state);
    if (events.length === 0) return;
    try {
      await store.append(orderId, events, { expectedVersion: version });
      return;
    } catch (err) {
      if (!(err instanceof ConcurrencyError)) throw err;
      console.log(
        `  conflict on ${err.streamId}: expected v${err.expectedVersion}, was v${err.actualVersion}; retrying`,
      );
    }
  }
}
const place = (id: string, total: number) =>
  command(id, (o) => (o.status === 'none' ? [{ type: 'order.placed', data: { total } }] : []));
const pay = (id: string, amount: number) =>
  command(id, (o) => (o.status === 'placed' ? [{ type: 'order.paid', data: { amount } }] : []));
const ship = (id: string) => command(id, (o) => (o.status === 'paid' ? [{ type: 'order.shipped', data: {} }] : []));

// Another agent on the bus: it gets every domain event as an envelope (workflowid = order, sequence = version).
const notified: string[] = [];
await bus.subscribe('es.order', (d) => {
  const e = eventFromEnvelope(d.envelope);
  notified.push(`${e.streamId}@v${e.version} ${e.type}`);
});
const relay = eventRelay({ store, bus, checkpoints: store.checkpoints });

// A read model: revenue and orders per status, with its checkpoint in the same file.
const byStatus = new Map<string, Order>();
const readModel = () => {
  const count: Record<string, number> = {};
  let revenue = 0;
  for (const o of byStatus.values()) {
    count[o.status] = (count[o.status] ?? 0) + 1;
    revenue += o.paid;
  }
  return { ...count, revenue };
};
let handled = 0;
const startProjection = () =>
  projection({
    store,
    name: 'orders-by-status',
    checkpoints: store.checkpoints,
    handle: (e) => {
      handled++;
      byStatus.set(e.streamId, apply(byStatus.get(e.streamId) ?? { status: 'none', total: 0, paid: 0 }, e));
    },
  });

console.log('placing and paying three orders; two payments for order-2 race each other');
let summary = startProjection();
await place('order-1', 30);
await place('order-2', 50);
await place('order-3', 20);
await pay('order-1', 30);
await Promise.all([pay('order-2', 50), pay('order-2', 50)]); // one wins, the loser sees it was paid
await ship('order-1');
await summary.waitFor(await store.head());
console.log('read model:', readModel());

await summary.stop();
console.log(`projection stopped at position ${await store.checkpoints.load('orders-by-status')}`);
await pay('order-3', 20);
await ship('order-2');
const head = await store.head();
handled = 0;
summary = startProjection();
await summary.waitFor(head);
console.log(`restarted: handled ${handled} new events from its checkpoint up to ${summary.position}:`, readModel());

await relay.waitFor(head);
while (notified.length < head) await new Promise((r) => setTimeout(r, 10));
console.log(`the relay published ${notified.length} events on the bus:`);
for (const line of notified) console.log(`  ${line}`);
console.log(
  'order-2 as stored:',
  (await foldStream(store, 'order-2', apply, { status: 'none', total: 0, paid: 0 } as Order)).state,
);

await summary.stop();
await relay.stop();
await bus.close();
await store.close();
rmSync(dir, { recursive: true, force: true });
