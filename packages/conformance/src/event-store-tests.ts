import {
  type AppendResult,
  type CheckpointStore,
  ClosedError,
  ConcurrencyError,
  type EventStore,
  type EventStoreOptions,
  type NewEvent,
  projection,
  SerializationError,
  type StoredEvent,
  silentLogger,
  ValidationError,
} from '@agentbus/core';
import { afterEach, describe, expect, it } from 'vitest';
import { until } from './wait.js';

export { type EventRelayScenarioOptions, eventRelayScenario } from './event-relay-scenario.js';

/** An event store under test, with the checkpoints its projections use. */
export type EventStoreUnderTest = EventStore & { readonly checkpoints: CheckpointStore };

export interface EventStoreContractOptions {
  readonly name: string;
  /**
   * A store over the backend; `name` separates tests sharing one backend. Durable stores open the
   * same events again for the same name (also while another store of that name is open).
   */
  readonly open: (name: string, options: EventStoreOptions) => EventStoreUnderTest;
  /** Whether stores opened with the same name share their events (SQLite file, Redis): reopen and cross-instance tests. */
  readonly durable: boolean;
}

let n = 0;

const event = (type: string, data: unknown = { type }, extra: Partial<NewEvent> = {}): NewEvent => ({
  type,
  data,
  ...extra,
});

async function collect<T>(iterable: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of iterable) out.push(x);
  return out;
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  throw new Error('expected a rejection');
}

/** The behaviour every EventStore must have (append, optimistic concurrency, reads, subscriptions, projections). */
export function eventStoreContract(o: EventStoreContractOptions): void {
  describe(`event store on ${o.name}`, () => {
    const opened: EventStoreUnderTest[] = [];
    const open = (name: string) => {
      const s = o.open(name, { logger: silentLogger });
      opened.push(s);
      return s;
    };
    afterEach(async () => {
      for (const s of opened.splice(0)) await s.close();
    });
    const fresh = () => `es${process.pid}x${Date.now().toString(36)}x${n++}`;

    it('appends events to a stream and reads them back in version order, from any version and with a limit', async () => {
      const s = open(fresh());
      const first = await s.append('order-1', [
        event('order.placed', { total: 42.5, lines: [{ sku: 'a', qty: 2 }], note: 'größer 🚀' }),
        event('order.paid', { amount: 42.5 }, { metadata: { actor: 'alice' } }),
      ]);
      expect(first).toMatchObject({ streamId: 'order-1', version: 2 });
      expect(first.events.map((e) => e.version)).toEqual([1, 2]);
      expect(first.position).toBe(first.events[1]?.position);
      expect(new Set(first.events.map((e) => e.id)).size).toBe(2);
      expect(Number.isNaN(Date.parse(first.events[0]?.time ?? ''))).toBe(false);
      const second = await s.append('order-1', [event('order.shipped', null, { id: 'evt-3' })], {
        expectedVersion: 2,
      });
      expect(second.events[0]).toMatchObject({ id: 'evt-3', version: 3, data: null, metadata: {} });

      const all = await collect(s.read('order-1'));
      expect(all).toEqual([...first.events, ...second.events]);
      expect(all[0]?.data).toEqual({ total: 42.5, lines: [{ sku: 'a', qty: 2 }], note: 'größer 🚀' });
      expect(all[1]?.metadata).toEqual({ actor: 'alice' });
      expect((await collect(s.read('order-1', { fromVersion: 2 }))).map((e) => e.type)).toEqual([
        'order.paid',
        'order.shipped',
      ]);
      expect((await collect(s.read('order-1', { fromVersion: 2, limit: 1 }))).map((e) => e.version)).toEqual([2]);
      expect(await collect(s.read('order-1', { fromVersion: 4 }))).toEqual([]);
      expect(await collect(s.read('order-2'))).toEqual([]);
      expect(await s.version('order-1')).toBe(3);
      expect(await s.version('order-2')).toBe(0);
    });

    it('stores data as JSON: later changes to the appended object do not reach the store', async () => {
      const s = open(fresh());
      const data = { items: ['a'], at: new Date(Date.UTC(2026, 0, 1)) };
      const result = await s.append('cart-1', [event('cart.created', data)]);
      data.items.push('b');
      const [read] = await collect(s.read('cart-1'));
      expect(read?.data).toEqual({ items: ['a'], at: '2026-01-01T00:00:00.000Z' });
      expect(result.events[0]?.data).toEqual(read?.data);
    });

    it('rejects an append whose expectedVersion does not match with ConcurrencyError, and appends nothing', async () => {
      const s = open(fresh());
      await s.append('acct-1', [event('opened')], { expectedVersion: 'no-stream' });
      const head = await s.head();
      for (const [expectedVersion, actualVersion] of [
        ['no-stream', 1],
        [0, 1],
        [5, 1],
      ] as const) {
        const err = await rejection(s.append('acct-1', [event('deposited')], { expectedVersion }));
        expect(err).toBeInstanceOf(ConcurrencyError);
        expect(err).toMatchObject({ code: 'CONCURRENCY', retryable: false, streamId: 'acct-1', actualVersion });
        expect((err as ConcurrencyError).data).toEqual({ streamId: 'acct-1', expectedVersion, actualVersion });
      }
      expect(await s.version('acct-1')).toBe(1);
      expect(await s.head()).toBe(head);
      expect((await s.append('acct-1', [event('deposited')], { expectedVersion: 1 })).version).toBe(2);
      expect((await s.append('acct-1', [event('deposited')], { expectedVersion: 'any' })).version).toBe(3);
      expect((await s.append('acct-1', [event('deposited')])).version).toBe(4);
      const missing = await rejection(s.append('acct-2', [event('deposited')], { expectedVersion: 2 }));
      expect(missing).toMatchObject({ code: 'CONCURRENCY', actualVersion: 0 });
      expect(await s.version('acct-2')).toBe(0);
    });

    it('lets exactly one of several concurrent appenders with the same expectedVersion win', async () => {
      const name = fresh();
      const a = open(name);
      // Two connections (two processes' worth) where the backend is shared.
      const b = o.durable ? open(name) : a;
      const winners: string[] = [];
      for (let round = 0; round < 10; round++) {
        const results = await Promise.allSettled(
          Array.from({ length: 8 }, (_, i) =>
            (i % 2 ? b : a).append('race-1', [event('bid', { round, i }, { id: `r${round}-${i}` })], {
              expectedVersion: round,
            }),
          ),
        );
        const won = results.filter((r) => r.status === 'fulfilled');
        expect(won).toHaveLength(1);
        winners.push((won[0] as PromiseFulfilledResult<AppendResult>).value.events[0]?.id as string);
        for (const r of results) {
          if (r.status === 'rejected') {
            expect(r.reason).toBeInstanceOf(ConcurrencyError);
            expect(r.reason).toMatchObject({ actualVersion: round + 1 });
          }
        }
      }
      const stored = await collect(a.read('race-1'));
      expect(stored.map((e) => e.version)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
      expect(stored.map((e) => e.id)).toEqual(winners);
    });

    it('gives events increasing global positions across streams, and readAll returns them in order', async () => {
      const s = open(fresh());
      expect(await s.head()).toBe(0);
      const r1 = await s.append('a-1', [event('x'), event('y')]);
      const r2 = await s.append('b-1', [event('z')]);
      const r3 = await s.append('a-1', [event('w')]);
      const positions = [...r1.events, ...r2.events, ...r3.events].map((e) => e.position);
      expect(positions[1]).toBe((positions[0] as number) + 1);
      for (let i = 1; i < positions.length; i++) expect(positions[i]).toBeGreaterThan(positions[i - 1] as number);
      expect(await s.head()).toBe(r3.position);
      const all = await collect(s.readAll());
      expect(all.map((e) => `${e.streamId}@${e.version}`)).toEqual(['a-1@1', 'a-1@2', 'b-1@1', 'a-1@3']);
      expect(all.map((e) => e.position)).toEqual(positions);
      expect((await collect(s.readAll({ fromPosition: r2.position }))).map((e) => e.type)).toEqual(['z', 'w']);
      expect((await collect(s.readAll({ limit: 2 }))).map((e) => e.type)).toEqual(['x', 'y']);
      expect(await collect(s.readAll({ fromPosition: r3.position + 1 }))).toEqual([]);
    });

    it('pages through streams and the log longer than one read', async () => {
      const s = open(fresh());
      const many = (from: number, count: number) =>
        Array.from({ length: count }, (_, i) => event('tick', { i: from + i }));
      await s.append('big-1', many(0, 700));
      await s.append('other-1', many(0, 1));
      await s.append('big-1', many(700, 600), { expectedVersion: 700 });
      const stream = await collect(s.read<{ i: number }>('big-1'));
      expect(stream.map((e) => e.data.i)).toEqual(Array.from({ length: 1300 }, (_, i) => i));
      expect(stream.map((e) => e.version)).toEqual(Array.from({ length: 1300 }, (_, i) => i + 1));
      const all = await collect(s.readAll());
      expect(all).toHaveLength(1301);
      expect(all.every((e, i) => i === 0 || e.position > (all[i - 1] as StoredEvent).position)).toBe(true);
      expect(await collect(s.read('big-1', { fromVersion: 1000, limit: 550 }))).toHaveLength(301);
    });

    it('subscribeAll hands over stored events from a position, then each event appended later', async () => {
      const s = open(fresh());
      const r = await s.append('s-1', [event('a'), event('b'), event('c')]);
      const got: string[] = [];
      const sub = s.subscribeAll(
        (e) => {
          got.push(e.type);
        },
        { fromPosition: r.events[1]?.position },
      );
      await until(() => got.length === 2, 10_000, 'catch-up');
      expect(got).toEqual(['b', 'c']);
      await s.append('s-2', [event('d')]);
      await s.append('s-1', [event('e'), event('f')]);
      await until(() => got.length === 5, 10_000, 'live events');
      expect(got).toEqual(['b', 'c', 'd', 'e', 'f']);
      expect(sub.position).toBe(await s.head());
      await sub.close();
      await sub.done;
      await s.append('s-1', [event('g')]);
      expect(got).toHaveLength(5);

      const live: string[] = [];
      let caughtUp = false;
      const fromEnd = s.subscribeAll(
        (e) => {
          live.push(e.type);
        },
        {
          fromPosition: 'end',
          onCaughtUp: () => {
            caughtUp = true;
          },
        },
      );
      await until(() => caughtUp, 10_000, 'the end subscription to start');
      await s.append('s-3', [event('h')]);
      await until(() => live.length === 1, 10_000, 'a live event');
      expect(live).toEqual(['h']);
      await fromEnd.close();
    });

    it('subscribeAll misses nothing and keeps position order while several writers append', async () => {
      const s = open(fresh());
      const got: StoredEvent[] = [];
      const sub = s.subscribeAll((e) => {
        got.push(e);
      });
      await Promise.all(
        Array.from({ length: 5 }, async (_, w) => {
          for (let i = 0; i < 20; i++) await s.append(`writer-${w}`, [event('step', { i })]);
        }),
      );
      await until(() => got.length >= 100, 10_000, '100 events');
      expect(got).toHaveLength(100);
      expect(got.every((e, i) => i === 0 || e.position > (got[i - 1] as StoredEvent).position)).toBe(true);
      for (let w = 0; w < 5; w++) {
        expect(got.filter((e) => e.streamId === `writer-${w}`).map((e) => e.version)).toEqual(
          Array.from({ length: 20 }, (_, i) => i + 1),
        );
      }
      await sub.close();
    });

    it('a subscription whose handler throws stops at the event before; done rejects with the error', async () => {
      const s = open(fresh());
      const r = await s.append('t-1', [event('ok'), event('bad'), event('later')]);
      const got: string[] = [];
      const sub = s.subscribeAll((e) => {
        if (e.type === 'bad') throw new Error('projection bug');
        got.push(e.type);
      });
      await expect(sub.done).rejects.toThrow('projection bug');
      expect(got).toEqual(['ok']);
      expect(sub.position).toBe(r.events[0]?.position);
      await sub.close();
    });

    if (o.durable)
      it('a subscription sees appends made through another store on the same backend', async () => {
        const name = fresh();
        const writer = open(name);
        const reader = open(name);
        await writer.append('x-1', [event('before')]);
        const got: string[] = [];
        const sub = reader.subscribeAll((e) => {
          got.push(e.type);
        });
        await until(() => got.length === 1, 10_000, 'catch-up');
        await writer.append('x-1', [event('after')]);
        await until(() => got.length === 2, 10_000, 'an append from the other store');
        expect(got).toEqual(['before', 'after']);
        await sub.close();
      });

    it('a projection resumes from its checkpoint after a restart, without handling checkpointed events again', async () => {
      const s = open(fresh());
      await s.append('p-1', [event('a'), event('b')]);
      await s.append('p-2', [event('c')]);
      const handled: string[] = [];
      const handle = (e: StoredEvent) => {
        handled.push(e.type);
      };
      const first = projection({ store: s, name: 'totals', checkpoints: s.checkpoints, handle, logger: silentLogger });
      await first.waitFor(await s.head(), 10_000);
      await first.stop();
      expect(await s.checkpoints.load('totals')).toBe(await s.head());
      await s.append('p-1', [event('d')]);
      const r = await s.append('p-3', [event('e')]);
      const second = projection({ store: s, name: 'totals', checkpoints: s.checkpoints, handle, logger: silentLogger });
      await second.waitFor(r.position, 10_000);
      expect(handled).toEqual(['a', 'b', 'c', 'd', 'e']);
      expect(second.position).toBe(r.position);
      await second.stop();
      expect(await s.checkpoints.load('totals')).toBe(r.position);

      const other: string[] = [];
      const audit = projection({
        store: s,
        name: 'audit',
        checkpoints: s.checkpoints,
        handle: (e) => {
          other.push(e.type);
        },
        logger: silentLogger,
      });
      await audit.waitFor(r.position, 10_000);
      expect(other).toEqual(['a', 'b', 'c', 'd', 'e']);
      await audit.stop();
    });

    it('a projection saves its checkpoint every checkpointEvery events and when caught up', async () => {
      const s = open(fresh());
      const r = await s.append(
        'c-1',
        Array.from({ length: 7 }, (_, i) => event('n', { i })),
      );
      const saves: number[] = [];
      const checkpoints: CheckpointStore = {
        load: (name) => s.checkpoints.load(name),
        save: async (name, position) => {
          saves.push(position);
          await s.checkpoints.save(name, position);
        },
      };
      const p = projection({ store: s, name: 'batched', checkpoints, handle: () => {}, checkpointEvery: 3 });
      await until(() => saves.length === 3, 10_000, 'three checkpoint saves');
      const at = r.events.map((e) => e.position);
      expect(saves).toEqual([at[2], at[5], at[6]]);
      await p.stop();
      expect(saves).toHaveLength(3);
    });

    it('a projection whose handler fails stops before that event and handles it again when restarted', async () => {
      const s = open(fresh());
      const r = await s.append('f-1', [event('a'), event('b'), event('c')]);
      const handled: string[] = [];
      let failOnce = true;
      const options = {
        store: s,
        name: 'flaky',
        checkpoints: s.checkpoints,
        handle: (e: StoredEvent) => {
          if (e.type === 'b' && failOnce) {
            failOnce = false;
            throw new Error('read model unavailable');
          }
          handled.push(e.type);
        },
        logger: silentLogger,
      };
      const first = projection(options);
      await expect(first.done).rejects.toThrow('read model unavailable');
      await expect(first.waitFor(r.position)).rejects.toThrow('read model unavailable');
      expect(first.position).toBe(r.events[0]?.position);
      expect(await s.checkpoints.load('flaky')).toBe(r.events[0]?.position);
      const second = projection(options);
      await second.waitFor(r.position, 10_000);
      expect(handled).toEqual(['a', 'b', 'c']);
      await second.stop();
    });

    if (o.durable)
      it('keeps streams, versions, positions and checkpoints across a reopen', async () => {
        const name = fresh();
        const first = open(name);
        await first.append('d-1', [event('a', { n: 1 }), event('b', { n: 2 })]);
        const r = await first.append('d-2', [event('c', { n: 3 })]);
        await first.checkpoints.save('reader', r.events[0]?.position as number);
        const before = await collect(first.readAll());
        await first.close();

        const again = open(name);
        expect(await collect(again.readAll())).toEqual(before);
        expect(await again.version('d-1')).toBe(2);
        expect(await again.head()).toBe(r.position);
        expect(await again.checkpoints.load('reader')).toBe(r.position);
        await expect(again.append('d-1', [event('x')], { expectedVersion: 1 })).rejects.toBeInstanceOf(
          ConcurrencyError,
        );
        const next = await again.append('d-1', [event('d', { n: 4 })], { expectedVersion: 2 });
        expect(next.events[0]).toMatchObject({ version: 3, position: r.position + 1 });
        const handled: string[] = [];
        const p = projection({
          store: again,
          name: 'reader',
          checkpoints: again.checkpoints,
          handle: (e) => {
            handled.push(e.type);
          },
        });
        await p.waitFor(next.position, 10_000);
        expect(handled).toEqual(['d']);
        await p.stop();
      });

    it('refuses invalid appends with ValidationError or SerializationError and stores nothing', async () => {
      const s = open(fresh());
      const bad: [string, NewEvent[], object, new (...a: never[]) => Error][] = [
        ['', [event('a')], {}, ValidationError],
        ['v-1', [], {}, ValidationError],
        ['v-1', [event('')], {}, ValidationError],
        ['v-1', [event('a', 1, { metadata: { n: 1 as unknown as string } })], {}, ValidationError],
        ['v-1', [event('a', 1, { metadata: { 'es-position': '1' } })], {}, ValidationError],
        ['v-1', [event('a')], { expectedVersion: -1 }, ValidationError],
        ['v-1', [event('a')], { expectedVersion: 1.5 }, ValidationError],
        ['v-1', [event('a')], { expectedVersion: 'latest' }, ValidationError],
        ['v-1', [event('a', 10n)], {}, SerializationError],
        ['v-1', [event('a'), { type: 'b', data: undefined }], {}, SerializationError],
      ];
      for (const [streamId, events, options, cls] of bad) {
        await expect(s.append(streamId, events, options)).rejects.toBeInstanceOf(cls);
      }
      expect(await s.head()).toBe(0);
      expect(() => s.read('v-1', { fromVersion: 0 })).toThrow(ValidationError);
      expect(() => s.readAll({ fromPosition: -3 })).toThrow(ValidationError);
    });

    it('close stops its subscriptions and projections and refuses further use with ClosedError', async () => {
      const s = open(fresh());
      await s.append('z-1', [event('a')]);
      let seen = 0;
      const sub = s.subscribeAll(() => {
        seen++;
      });
      const p = projection({ store: s, name: 'closing', checkpoints: s.checkpoints, handle: () => {} });
      await p.waitFor(1, 10_000);
      await until(() => seen === 1, 10_000, 'the subscription');
      await s.close();
      await sub.done;
      await p.done;
      await expect(s.append('z-1', [event('b')])).rejects.toBeInstanceOf(ClosedError);
      expect(() => s.readAll()).toThrow(ClosedError);
      expect(() => s.subscribeAll(() => {})).toThrow(ClosedError);
    });
  });
}
