import { eventStoreContract, until } from '@agentbus/conformance';
import {
  ConcurrencyError,
  createBus,
  defaultEventTopic,
  type Envelope,
  errorFromWire,
  eventFromEnvelope,
  eventRelay,
  foldStream,
  memoryCheckpointStore,
  memoryEventStore,
  memoryTransport,
  type StoredEvent,
  silentLogger,
} from '@agentbus/core';
import { expect, it } from 'vitest';

eventStoreContract({ name: 'memory', open: (_name, options) => memoryEventStore(options), durable: false });

it('rebuilds a ConcurrencyError that crossed the wire as the same class with its details', () => {
  const err = new ConcurrencyError('stream order-1 is at version 3', {
    data: { streamId: 'order-1', expectedVersion: 2, actualVersion: 3 },
  });
  const back = errorFromWire(JSON.parse(JSON.stringify(err.toWire())));
  expect(back).toBeInstanceOf(ConcurrencyError);
  expect(back).toMatchObject({ code: 'CONCURRENCY', retryable: false, streamId: 'order-1', actualVersion: 3 });
  expect((back as ConcurrencyError).expectedVersion).toBe(2);
});

it('folds a stream into state and the version to append at', async () => {
  const store = memoryEventStore();
  await store.append('acct-1', [
    { type: 'deposited', data: { amount: 10 } },
    { type: 'withdrawn', data: { amount: 3 } },
  ]);
  const { state, version } = await foldStream<number, { amount: number }>(
    store,
    'acct-1',
    (balance, e) => balance + (e.type === 'deposited' ? e.data.amount : -e.data.amount),
    0,
  );
  expect([state, version]).toEqual([7, 2]);
  expect(await foldStream(store, 'acct-2', (s: number) => s + 1, 0)).toEqual({ state: 0, version: 0 });
  await store.close();
});

it('names the default topic after the stream category', () => {
  expect(defaultEventTopic({ streamId: 'order-42' })).toBe('es.order');
  expect(defaultEventTopic({ streamId: 'cart' })).toBe('es.cart');
  expect(defaultEventTopic({ streamId: 'tenant.a/b-1' })).toBe('es.tenant_a_b');
  expect(defaultEventTopic({ streamId: '-x' })).toBe('es.-x');
});

it('relays appended events to bus subscribers as envelopes of their stream, and resumes from its checkpoint', async () => {
  const store = memoryEventStore({ logger: silentLogger });
  const checkpoints = memoryCheckpointStore();
  const bus = createBus({ transport: memoryTransport(), source: 'orders-service', logger: silentLogger });
  const received: Envelope[] = [];
  await bus.subscribe(
    'es.>',
    (d) => {
      received.push(d.envelope);
    },
    { group: 'read-model' },
  );
  await store.append('order-1', [
    { type: 'order.placed', data: { total: 5 }, metadata: { actor: 'alice' } },
    { type: 'order.paid', data: { amount: 5 } },
  ]);
  const relay = eventRelay({ store, bus, checkpoints, logger: silentLogger });
  const r = await store.append('invoice-7', [{ type: 'invoice.sent', data: { to: 'alice' } }]);
  await relay.waitFor(r.position, 10_000);
  await until(() => received.length === 3, 10_000, 'three envelopes');
  expect(received.map((e) => [e.topic, e.type, e.workflowid, e.sequence, e.source])).toEqual([
    ['es.order', 'order.placed', 'order-1', 1, 'orders-service'],
    ['es.order', 'order.paid', 'order-1', 2, 'orders-service'],
    ['es.invoice', 'invoice.sent', 'invoice-7', 1, 'orders-service'],
  ]);
  const stored: StoredEvent[] = [];
  for await (const e of store.readAll()) stored.push(e);
  expect(received.map((e) => eventFromEnvelope(e))).toEqual(stored);
  expect(received.map((e) => e.id)).toEqual(stored.map((e) => e.id));

  await relay.stop();
  expect(await checkpoints.load('bus-relay')).toBe(r.position);
  const later = await store.append('order-1', [{ type: 'order.shipped', data: {} }], { expectedVersion: 2 });
  const again = eventRelay({ store, bus, checkpoints, topic: (e) => `es.audit.${e.type}`, logger: silentLogger });
  await again.waitFor(later.position, 10_000);
  await until(() => received.length === 4, 10_000, 'the event appended while the relay was stopped');
  expect(received.slice(3).map((e) => [e.topic, e.workflowid, e.sequence])).toEqual([
    ['es.audit.order.shipped', 'order-1', 3],
  ]);
  await again.stop();
  await bus.close();
  await store.close();
});

it('refuses an envelope that no relay published as an event', () => {
  const bus = createBus({ transport: memoryTransport(), logger: silentLogger });
  expect(() => eventFromEnvelope(bus.envelope('es.order', {}, { workflowid: 'order-1' }))).toThrow(
    /not a relayed event/,
  );
});

it('a relay retries a publish the transport refuses for a while, and stops with the error it cannot retry', async () => {
  const store = memoryEventStore({ logger: silentLogger });
  const transport = memoryTransport();
  let failures = 2;
  const publish = transport.publish.bind(transport);
  transport.publish = async (batch) => {
    if (failures-- > 0) throw new Error('broker unavailable');
    return publish(batch);
  };
  const bus = createBus({ transport, logger: silentLogger });
  const received: string[] = [];
  await bus.subscribe('es.>', (d) => {
    received.push(d.envelope.type);
  });
  const relay = eventRelay({ store, bus, checkpoints: store.checkpoints, logger: silentLogger });
  const r = await store.append('order-1', [{ type: 'order.placed', data: {} }]);
  await relay.waitFor(r.position, 10_000);
  await until(() => received.length === 1, 10_000, 'the retried event');
  expect(failures).toBeLessThan(0);

  await store.append('order-1', [{ type: 'order.huge', data: { blob: 'x'.repeat(2 * 1024 * 1024) } }]);
  await expect(relay.done).rejects.toMatchObject({ code: 'PAYLOAD_TOO_LARGE' });
  expect(await store.checkpoints.load('bus-relay')).toBe(r.position);
  await bus.close();
  await store.close();
});
