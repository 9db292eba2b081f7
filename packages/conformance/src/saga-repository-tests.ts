import type { SagaRepository, SagaState, SagaStatus } from '@agentbus/core';
import { afterEach, describe, expect, it } from 'vitest';

export interface SagaRepositoryContractOptions {
  readonly name: string;
  /**
   * A repository over the backend; `name` separates tests sharing one backend. Durable
   * repositories reach the same state for the same name (as another process would).
   */
  readonly open: (name: string) => SagaRepository & { close?(): unknown };
  /** Whether a reopened repository (same name) keeps the state (SQLite, Redis). */
  readonly durable: boolean;
}

let n = 0;

/** A saga state for the tests. */
export function sampleSaga(id: string, overrides: Partial<SagaState> = {}): SagaState {
  return {
    id,
    name: 'checkout',
    status: 'running',
    payload: { orderId: id, items: [{ sku: 'a-1', qty: 2 }], note: 'naïve ✓', nothing: null },
    steps: [
      {
        name: 'reserve',
        status: 'succeeded',
        attempts: 1,
        failures: 0,
        compensationAttempts: 0,
        compensationFailures: 0,
        interruptions: 0,
        result: { reservation: 'r-1' },
      },
      {
        name: 'charge',
        status: 'pending',
        attempts: 0,
        failures: 0,
        compensationAttempts: 0,
        compensationFailures: 0,
        interruptions: 0,
      },
    ],
    createdAtMs: 1_000,
    updatedAtMs: 1_000,
    version: 1,
    owner: 'orchestrator-a',
    leaseUntilMs: 31_000,
    ...overrides,
  };
}

/** The behaviour every SagaRepository must have. */
export function sagaRepositoryContract(o: SagaRepositoryContractOptions): void {
  describe(`saga repository on ${o.name}`, () => {
    const opened: { close?(): unknown }[] = [];
    const open = (name: string) => {
      const r = o.open(name);
      opened.push(r);
      return r;
    };
    afterEach(async () => {
      for (const r of opened.splice(0)) await r.close?.();
    });
    const fresh = () => `t${process.pid}x${Date.now().toString(36)}x${n++}`;

    it('creates a saga once and gives back exactly what was stored', async () => {
      const r = open(fresh());
      const s = sampleSaga('s1');
      expect(await r.create(s)).toBe(true);
      expect(await r.get('s1')).toEqual(s);
      expect(await r.create(sampleSaga('s1', { name: 'other', payload: { x: 1 } }))).toBe(false);
      expect(await r.get('s1')).toEqual(s);
      expect(await r.get('missing')).toBeUndefined();
    });

    it('saves only over the version just before (optimistic concurrency)', async () => {
      const r = open(fresh());
      await r.create(sampleSaga('s1'));
      const v2 = sampleSaga('s1', { version: 2, status: 'compensating', owner: 'orchestrator-b' });
      expect(await r.save(v2)).toBe(true);
      expect(await r.get('s1')).toEqual(v2);
      // A writer that still holds version 1 is refused, and so is a jump ahead.
      expect(await r.save(sampleSaga('s1', { version: 2, payload: { stale: true } }))).toBe(false);
      expect(await r.save(sampleSaga('s1', { version: 4 }))).toBe(false);
      expect(await r.get('s1')).toEqual(v2);
      expect(await r.save(sampleSaga('missing', { version: 2 }))).toBe(false);
      expect(await r.get('missing')).toBeUndefined();
    });

    it('lets exactly one of two concurrent writers of the same version win', async () => {
      const name = fresh();
      const a = open(name);
      const b = o.durable ? open(name) : a;
      await a.create(sampleSaga('s1'));
      for (let v = 2; v <= 21; v++) {
        const results = await Promise.all([
          a.save(sampleSaga('s1', { version: v, owner: 'a' })),
          b.save(sampleSaga('s1', { version: v, owner: 'b' })),
        ]);
        expect(results.filter(Boolean)).toHaveLength(1);
        expect((await a.get('s1'))?.owner).toBe(results[0] ? 'a' : 'b');
      }
      expect((await b.get('s1'))?.version).toBe(21);
    });

    it('lists by status and name, oldest first, with a limit', async () => {
      const r = open(fresh());
      const make = (id: string, createdAtMs: number, status: SagaStatus, name = 'checkout') =>
        r.create(sampleSaga(id, { createdAtMs, status, name }));
      await make('c', 3_000, 'running');
      await make('a', 1_000, 'compensating');
      await make('b', 2_000, 'completed');
      await make('d', 4_000, 'failed', 'refund');
      await make('e', 1_000, 'running', 'refund');
      const ids = (list: SagaState[]) => list.map((s) => s.id);
      expect(ids(await r.list())).toEqual(['a', 'e', 'b', 'c', 'd']);
      expect(ids(await r.list({ status: ['running', 'compensating'] }))).toEqual(['a', 'e', 'c']);
      expect(ids(await r.list({ status: 'failed' }))).toEqual(['d']);
      expect(ids(await r.list({ status: [] }))).toEqual([]);
      expect(ids(await r.list({ name: 'refund' }))).toEqual(['e', 'd']);
      expect(ids(await r.list({ status: 'running', name: 'checkout' }))).toEqual(['c']);
      expect(ids(await r.list({ limit: 2 }))).toEqual(['a', 'e']);
      expect(ids(await r.list({ name: 'refund', limit: 1 }))).toEqual(['e']);
    });

    it('moves a saga between status lists as it is saved', async () => {
      const r = open(fresh());
      await r.create(sampleSaga('s1'));
      expect((await r.list({ status: 'running' })).map((s) => s.id)).toEqual(['s1']);
      await r.save(sampleSaga('s1', { version: 2, status: 'compensating' }));
      await r.save(sampleSaga('s1', { version: 3, status: 'compensated' }));
      expect(await r.list({ status: ['running', 'compensating'] })).toEqual([]);
      expect((await r.list({ status: 'compensated' })).map((s) => s.version)).toEqual([3]);
    });

    it('deletes a saga', async () => {
      const r = open(fresh());
      await r.create(sampleSaga('s1', { status: 'failed' }));
      expect(await r.delete('s1')).toBe(true);
      expect(await r.delete('s1')).toBe(false);
      expect(await r.get('s1')).toBeUndefined();
      expect(await r.list({ status: 'failed' })).toEqual([]);
      expect(await r.create(sampleSaga('s1'))).toBe(true);
    });

    it('hands out copies: changing a state read back changes nothing stored', async () => {
      const r = open(fresh());
      await r.create(sampleSaga('s1'));
      const got = (await r.get('s1')) as { payload: { orderId: string } };
      got.payload.orderId = 'changed';
      expect((await r.get('s1'))?.payload).toMatchObject({ orderId: 's1' });
    });

    if (o.durable)
      it('keeps sagas across a reopen', async () => {
        const name = fresh();
        const first = open(name);
        await first.create(sampleSaga('s1'));
        await first.save(sampleSaga('s1', { version: 2, status: 'compensating' }));
        await first.close?.();
        const again = open(name);
        expect(await again.get('s1')).toEqual(sampleSaga('s1', { version: 2, status: 'compensating' }));
        expect((await again.list({ status: 'compensating' })).map((s) => s.id)).toEqual(['s1']);
      });
  });
}
