import {
  type CheckpointStore,
  ConcurrencyError,
  createBus,
  eventFromEnvelope,
  eventRelay,
  foldStream,
  memoryEventStore,
  type StoredEvent,
  silentLogger,
  type Transport,
} from '@agentbus/core';
import { expect, it } from 'vitest';
import type { EventStoreUnderTest } from './event-store-tests.js';
import { until } from './wait.js';

export interface EventRelayScenarioOptions {
  /** Transport name for the test title. */
  readonly name: string;
  /** A new transport on the backend (called twice: the relay's side and the read model's). */
  readonly open: () => Transport;
  /** The event store the relay reads (default: a memory store). */
  readonly store?: () => EventStoreUnderTest;
  readonly skipReason?: string | false | undefined;
}

type Account = { balance: number; owner?: string };
type AccountEvent =
  | { type: 'account.opened'; data: { owner: string } }
  | { type: 'account.deposited'; data: { amount: number } }
  | { type: 'account.withdrawn'; data: { amount: number } };

function apply(state: Account, e: StoredEvent): Account {
  const ev = e as unknown as AccountEvent;
  switch (ev.type) {
    case 'account.opened':
      return { ...state, owner: ev.data.owner };
    case 'account.deposited':
      return { ...state, balance: state.balance + ev.data.amount };
    case 'account.withdrawn':
      return { ...state, balance: state.balance - ev.data.amount };
  }
}

/**
 * End to end over a transport: events appended to an event store are published by `eventRelay`
 * (stopped halfway and started again, so it resumes from its checkpoint) and consumed by a bus
 * subscriber on another connection that builds a read model (balances per account, applied in
 * version order). The read model must match the store's, and every event arrive exactly once.
 */
export function eventRelayScenario(o: EventRelayScenarioOptions): void {
  it.skipIf(o.skipReason)(
    `relays appended events over ${o.name} to a subscriber whose read model matches the store`,
    async () => {
      const store = o.store?.() ?? memoryEventStore({ logger: silentLogger });
      const producer = createBus({ transport: o.open(), source: 'accounts', logger: silentLogger });
      const consumer = createBus({ transport: o.open(), logger: silentLogger });
      const accounts = ['account-1', 'account-2', 'account-3'];

      // The read model on the far side of the transport.
      const model = new Map<string, Account & { version: number }>();
      const deliveries = new Map<string, number>();
      await consumer.subscribe(
        'es.account',
        (d) => {
          const e = eventFromEnvelope(d.envelope);
          const current = model.get(e.streamId) ?? { balance: 0, version: 0 };
          // Out of order (not seen on these transports with one consumer): retried until its turn.
          if (e.version > current.version + 1) throw new Error(`version ${e.version} before ${current.version + 1}`);
          deliveries.set(e.id, (deliveries.get(e.id) ?? 0) + 1);
          if (e.version <= current.version) return; // a duplicate: already applied
          model.set(e.streamId, { ...apply(current, e), version: e.version });
        },
        { group: 'balances', backoff: { initialDelayMs: 10, maxDelayMs: 100 } },
      );

      /** A command: decide on the current state, append at the version it was decided on. */
      const command = async (id: string, decide: (s: Account) => AccountEvent[]) => {
        for (;;) {
          const { state, version } = await foldStream(store, id, apply, { balance: 0 } as Account);
          const events = decide(state);
          if (events.length === 0) return;
          try {
            return await store.append(id, events, { expectedVersion: version });
          } catch (err) {
            if (!(err instanceof ConcurrencyError)) throw err;
          }
        }
      };
      const deposit = (id: string, amount: number) =>
        command(id, () => [{ type: 'account.deposited', data: { amount } }]);
      const withdraw = (id: string, amount: number) =>
        command(id, (s) => (s.balance >= amount ? [{ type: 'account.withdrawn', data: { amount } }] : []));

      for (const [i, id] of accounts.entries()) {
        await store.append(id, [{ type: 'account.opened', data: { owner: `owner-${i}` } }], {
          expectedVersion: 'no-stream',
        });
      }
      await Promise.all(accounts.map((id, i) => deposit(id, 100 * (i + 1))));

      const checkpoints: CheckpointStore = store.checkpoints;
      const first = eventRelay({ store, bus: producer, checkpoints, logger: silentLogger });
      // Concurrent commands on the same accounts while the relay runs: some lose and retry.
      await Promise.all(accounts.flatMap((id) => [deposit(id, 5), deposit(id, 7), withdraw(id, 30)]));
      const halfway = await store.head();
      await first.waitFor(halfway, 20_000);
      await first.stop();
      expect(await checkpoints.load('bus-relay')).toBe(halfway);

      // Appended while no relay runs: the next one starts from the checkpoint.
      await Promise.all(accounts.map((id) => withdraw(id, 50)));
      const second = eventRelay({ store, bus: producer, checkpoints, logger: silentLogger });
      await deposit('account-1', 1);
      const head = await store.head();
      await second.waitFor(head, 20_000);

      const expected = new Map<string, Account & { version: number }>();
      for (const id of accounts) {
        const { state, version } = await foldStream(store, id, apply, { balance: 0 } as Account);
        expected.set(id, { ...state, version });
      }
      await until(
        () => accounts.every((id) => model.get(id)?.version === expected.get(id)?.version),
        20_000,
        `the read model to reach the store's versions (${JSON.stringify([...model])})`,
      );
      expect(model).toEqual(expected);
      const ids: string[] = [];
      for await (const e of store.readAll()) ids.push(e.id);
      expect(ids).toHaveLength(head);
      expect([...deliveries.keys()].sort()).toEqual([...ids].sort());
      expect([...deliveries.values()].every((n) => n === 1)).toBe(true);

      await second.stop();
      await consumer.close();
      await producer.close();
      await store.close();
    },
    60_000,
  );
}
