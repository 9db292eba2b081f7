import {
  ConfigError,
  defineSaga,
  type SagaCompensationContext,
  type SagaStepContext,
  TimeoutError,
  UnrecoverableError,
  ValidationError,
} from '@agentbus/core';
import { describe, expect, it } from 'vitest';
import { pubSubRequester, servePubSub } from './saga-fixtures.js';
import { sagaResumeTests } from './saga-resume-tests.js';
import { DONE, type Order, type SagaBehaviourOptions, sagaWorld, stepView } from './saga-world.js';
import { until } from './wait.js';

export type { SagaBehaviourOptions } from './saga-world.js';

/** The orchestrator's behaviour on a repository (memory, SQLite): steps, compensation, timeouts, resume, events, requests. */
export function sagaBehaviourTests(o: SagaBehaviourOptions): void {
  describe(`sagas on ${o.name}`, () => {
    const world = sagaWorld(o);

    it('runs every step in order with a shared payload and the earlier results, then completes', async () => {
      const w = await world();
      const saga = defineSaga<Order>({
        name: 'checkout',
        steps: [
          {
            name: 'reserve',
            action: async (ctx) => {
              ctx.payload.log.push('reserve');
              return { reservation: `r-${ctx.payload.orderId}` };
            },
          },
          {
            name: 'charge',
            action: async (ctx) => {
              ctx.payload.total += 5;
              ctx.payload.log.push('charge');
              return { chargeId: 'c-1', amount: ctx.payload.total, reserved: ctx.results.reserve };
            },
          },
          { name: 'ship', action: (ctx) => ({ shipped: ctx.payload.log.join(','), attempt: ctx.attempt }) },
        ],
      });
      const orch = w.orchestrator({ sagas: [saga] });
      const id = await orch.start('checkout', { orderId: 'o1', total: 10, log: [] });
      const s = await orch.wait(id, { timeoutMs: 10_000 });
      expect(s.status).toBe('completed');
      expect(s.payload).toEqual({ orderId: 'o1', total: 15, log: ['reserve', 'charge'] });
      expect(stepView(s)).toEqual(['reserve:succeeded', 'charge:succeeded', 'ship:succeeded']);
      expect(s.steps.map((st) => st.result)).toEqual([
        { reservation: 'r-o1' },
        { chargeId: 'c-1', amount: 15, reserved: { reservation: 'r-o1' } },
        { shipped: 'reserve,charge', attempt: 1 },
      ]);
      // Persisted as it ended, with the lease given up.
      const stored = await w.repo.get(id);
      expect(stored).toEqual(s);
      expect(stored?.owner).toBeUndefined();
      expect(stored?.leaseUntilMs).toBeUndefined();
    });

    it('on a failure at step 3 compensates steps 2 and 1 in reverse order, each with its action result', async () => {
      const w = await world();
      const calls: string[] = [];
      const undo = (step: string) => (ctx: SagaCompensationContext<Order>) => {
        calls.push(`undo ${step} ${JSON.stringify(ctx.result)} uncertain=${ctx.uncertain} error=${ctx.error?.code}`);
        ctx.payload.log.push(`undo ${step}`);
      };
      const saga = defineSaga<Order>({
        name: 'checkout',
        steps: [
          { name: 'one', action: () => ({ n: 1 }), compensate: undo('one') },
          { name: 'two', action: () => ({ n: 2 }), compensate: undo('two') },
          {
            name: 'three',
            action: (ctx) => {
              ctx.payload.log.push('three changed the payload, then failed');
              throw new UnrecoverableError('card declined');
            },
            compensate: undo('three'),
          },
          { name: 'four', action: () => calls.push('four ran'), compensate: undo('four') },
        ],
      });
      const orch = w.orchestrator({ sagas: [saga] });
      const s = await orch.wait(await orch.start('checkout', { orderId: 'o2', total: 1, log: [] }), DONE);
      expect(s.status).toBe('compensated');
      expect(calls).toEqual([
        'undo two {"n":2} uncertain=false error=UNRECOVERABLE',
        'undo one {"n":1} uncertain=false error=UNRECOVERABLE',
      ]);
      expect(stepView(s)).toEqual(['one:compensated', 'two:compensated', 'three:failed', 'four:pending']);
      expect(s.error).toMatchObject({ code: 'UNRECOVERABLE', message: 'card declined' });
      expect(s.steps[2]?.error?.code).toBe('UNRECOVERABLE');
      // The failed step's payload change was dropped; the compensations' changes were kept.
      expect(s.payload).toEqual({ orderId: 'o2', total: 1, log: ['undo two', 'undo one'] });
    });

    it('retries an action with a retryable error up to retry.maxAttempts, an unrecoverable one not at all', async () => {
      const w = await world();
      const attempts: string[] = [];
      const saga = defineSaga<Order>({
        name: 'flaky',
        steps: [
          {
            name: 'model-call',
            retry: { maxAttempts: 3, backoff: { initialDelayMs: 1, maxDelayMs: 2 } },
            action: (ctx) => {
              attempts.push(`model ${ctx.attempt}`);
              if (ctx.attempt < 3) throw new Error('rate limited by the model API');
              return 'ok';
            },
          },
          {
            name: 'validate',
            retry: { maxAttempts: 3, backoff: { initialDelayMs: 1, maxDelayMs: 2 } },
            action: (ctx) => {
              attempts.push(`validate ${ctx.attempt}`);
              if (ctx.payload.total < 0) throw new UnrecoverableError('negative total');
            },
          },
        ],
      });
      const orch = w.orchestrator({ sagas: [saga] });
      const ok = await orch.wait(await orch.start('flaky', { orderId: 'a', total: 1, log: [] }), DONE);
      expect(ok.status).toBe('completed');
      expect(ok.steps[0]).toMatchObject({ attempts: 3, failures: 2, result: 'ok' });
      attempts.length = 0;
      const bad = await orch.wait(await orch.start('flaky', { orderId: 'b', total: -1, log: [] }), DONE);
      expect(bad.status).toBe('compensated');
      expect(attempts).toEqual(['model 1', 'model 2', 'model 3', 'validate 1']);
      expect(bad.steps[1]).toMatchObject({ status: 'failed', attempts: 1, failures: 1 });
    });

    it('times a step out: its signal aborts with TimeoutError and it is compensated as uncertain', async () => {
      const w = await world();
      const seen: string[] = [];
      let reason: unknown;
      const saga = defineSaga<Order>({
        name: 'slow',
        steps: [
          {
            name: 'reserve',
            action: () => ({ reservation: 'r-9' }),
            compensate: (ctx) => seen.push(`undo reserve ${JSON.stringify(ctx.result)} uncertain=${ctx.uncertain}`),
          },
          {
            name: 'ask-model',
            timeoutMs: 50,
            action: (ctx: SagaStepContext<Order>) =>
              new Promise((_, reject) => {
                ctx.signal.addEventListener('abort', () => {
                  reason = ctx.signal.reason;
                  reject(ctx.signal.reason);
                });
              }),
            compensate: (ctx) => seen.push(`undo ask-model ${String(ctx.result)} uncertain=${ctx.uncertain}`),
          },
        ],
      });
      const orch = w.orchestrator({ sagas: [saga] });
      const started = Date.now();
      const s = await orch.wait(await orch.start('slow', { orderId: 't', total: 1, log: [] }), DONE);
      expect(Date.now() - started).toBeGreaterThanOrEqual(45);
      expect(reason).toBeInstanceOf(TimeoutError);
      expect(s.status).toBe('compensated');
      expect(s.steps[1]).toMatchObject({ status: 'compensated', uncertain: true, error: { code: 'TIMEOUT' } });
      expect(seen).toEqual([
        'undo ask-model undefined uncertain=true',
        'undo reserve {"reservation":"r-9"} uncertain=false',
      ]);
    });

    it('leaves a saga failed, with the error and listed for an operator, when a compensation keeps failing', async () => {
      const w = await world();
      let tries = 0;
      const saga = defineSaga<Order>({
        name: 'stuck',
        steps: [
          {
            name: 'book',
            action: () => 'booking-1',
            compensationRetry: { maxAttempts: 3, backoff: { initialDelayMs: 1, maxDelayMs: 2 } },
            compensate: () => {
              tries++;
              throw new Error('the airline API is down');
            },
          },
          { name: 'pay', action: () => Promise.reject(new UnrecoverableError('insufficient funds')) },
        ],
      });
      const orch = w.orchestrator({ sagas: [saga] });
      const id = await orch.start('stuck', { orderId: 'f', total: 1, log: [] });
      const s = await orch.wait(id, DONE);
      expect(s.status).toBe('failed');
      expect(tries).toBe(3);
      expect(s.steps[0]).toMatchObject({
        status: 'compensation-failed',
        compensationAttempts: 3,
        compensationFailures: 3,
        compensationError: { message: 'Error: the airline API is down' },
      });
      expect(s.error?.message).toBe('Error: the airline API is down');
      expect(s.steps[1]?.error?.code).toBe('UNRECOVERABLE');
      expect((await orch.list({ status: 'failed' })).map((x) => x.id)).toEqual([id]);
    });

    it('publishes saga events with the saga id as workflowid', async () => {
      const w = await world();
      const events = await w.observe();
      const saga = defineSaga<Order>({
        name: 'observed',
        steps: [
          { name: 'a', action: () => 1, compensate: () => {} },
          { name: 'b', action: (ctx) => (ctx.payload.total < 0 ? Promise.reject(new UnrecoverableError('no')) : 2) },
        ],
      });
      const orch = w.orchestrator({ sagas: [saga] });
      const ok = await orch.start('observed', { orderId: 'e1', total: 1, log: [] });
      const bad = await orch.start('observed', { orderId: 'e2', total: -1, log: [] });
      await orch.wait(ok, DONE);
      await orch.wait(bad, DONE);
      const of = (id: string) => events.filter((e) => e.data.sagaId === id);
      await until(() => of(ok).length >= 4 && of(bad).length >= 6, 10_000, 'the saga events');
      expect(of(ok).map((e) => `${e.data.event} ${e.data.step ?? ''}`.trim())).toEqual([
        'started',
        'step-succeeded a',
        'step-succeeded b',
        'completed',
      ]);
      expect(of(bad).map((e) => `${e.data.event} ${e.data.step ?? ''}`.trim())).toEqual([
        'started',
        'step-succeeded a',
        'step-failed b',
        'compensating',
        'step-compensated a',
        'compensated',
      ]);
      expect(of(ok).every((e) => e.workflowid === ok && e.topic === `${w.prefix}saga.observed.${e.data.event}`)).toBe(
        true,
      );
      expect(of(bad)[2]?.data).toMatchObject({ phase: 'action', retrying: false, error: { code: 'UNRECOVERABLE' } });
      expect(of(bad)[5]?.data).toMatchObject({ status: 'compensated', error: { code: 'UNRECOVERABLE' } });
    });

    it('asks another agent with bus.request in a request step, and compensates with a request carrying the result', async () => {
      const w = await world();
      const seen: string[] = [];
      await w.bus.reply<{ amount: number }>(`${w.prefix}.payments.charge`, (d) => {
        seen.push(`charge ${d.data.amount} workflow=${d.envelope.workflowid}`);
        return { chargeId: `ch-${d.data.amount}` };
      });
      await w.bus.reply<{ chargeId: string }>(`${w.prefix}.payments.refund`, (d) => {
        seen.push(`refund ${d.data.chargeId}`);
        return { refunded: true };
      });
      const saga = defineSaga<Order>({
        name: 'paid',
        steps: [
          {
            name: 'charge',
            action: { topic: `${w.prefix}.payments.charge`, data: (ctx) => ({ amount: ctx.payload.total }) },
            compensate: {
              topic: `${w.prefix}.payments.refund`,
              data: (ctx) => ({ chargeId: (ctx.result as { chargeId: string }).chargeId }),
            },
          },
          {
            name: 'ship',
            action: (ctx) => {
              if (ctx.payload.orderId === 'no-stock') throw new UnrecoverableError('out of stock');
              return ctx.request(`${w.prefix}.payments.charge`, { amount: 1 });
            },
          },
        ],
      });
      const orch = w.orchestrator({ sagas: [saga] });
      const ok = await orch.wait(await orch.start('paid', { orderId: 'fine', total: 42, log: [] }), DONE);
      expect(ok.status).toBe('completed');
      expect(ok.steps.map((s) => s.result)).toEqual([{ chargeId: 'ch-42' }, { chargeId: 'ch-1' }]);
      expect(seen).toEqual([`charge 42 workflow=${ok.id}`, `charge 1 workflow=${ok.id}`]);
      seen.length = 0;
      const bad = await orch.wait(await orch.start('paid', { orderId: 'no-stock', total: 7, log: [] }), DONE);
      expect(bad.status).toBe('compensated');
      expect(seen).toEqual([`charge 7 workflow=${bad.id}`, 'refund ch-7']);
    });

    it('takes a requester of its own (here: replies over plain publish/subscribe); a remote error fails the step as its class', async () => {
      const w = await world();
      const fixture = await pubSubRequester(w.bus, `${w.prefix}.inbox.orchestrator`);
      w.defer(() => fixture.close());
      await servePubSub<{ q: string }>(w.bus, `${w.prefix}.agents.research`, (data, workflowid) => {
        if (data.q === 'forbidden') throw new UnrecoverableError('not allowed to research that');
        return { answer: `${data.q}!`, workflowid };
      });
      const saga = defineSaga<{ q: string }>({
        name: 'research',
        steps: [{ name: 'ask', action: (ctx) => ctx.request(`${w.prefix}.agents.research`, { q: ctx.payload.q }) }],
      });
      const orch = w.orchestrator({ sagas: [saga], requester: fixture.requester });
      const ok = await orch.wait(await orch.start('research', { q: 'why' }), DONE);
      expect(ok.steps[0]?.result).toEqual({ answer: 'why!', workflowid: ok.id });
      const bad = await orch.wait(await orch.start('research', { q: 'forbidden' }), DONE);
      expect(bad).toMatchObject({ status: 'compensated', error: { code: 'UNRECOVERABLE' } });
      expect(fixture.requests()).toBe(2);
    });

    it('starts a saga once per id', async () => {
      const w = await world();
      let runs = 0;
      const saga = defineSaga({ name: 'once', steps: [{ name: 's', action: () => ++runs }] });
      const other = defineSaga({ name: 'other', steps: [{ name: 's', action: () => 0 }] });
      const orch = w.orchestrator({ sagas: [saga, other] });
      expect(await orch.start('once', {}, { id: 'order-1' })).toBe('order-1');
      await orch.wait('order-1', DONE);
      expect(await orch.start('once', {}, { id: 'order-1' })).toBe('order-1');
      expect((await orch.wait('order-1', DONE)).steps[0]?.result).toBe(1);
      expect(runs).toBe(1);
      await expect(orch.start('other', {}, { id: 'order-1' })).rejects.toBeInstanceOf(ConfigError);
      await expect(orch.start('missing', {})).rejects.toMatchObject({ code: 'CONFIG', path: 'sagaName' });
    });

    it('wait rejects for an unknown saga and after its timeout', async () => {
      const w = await world();
      const hang = w.hold();
      const saga = defineSaga({ name: 'waiting', steps: [{ name: 's', action: () => hang.wait() }] });
      const orch = w.orchestrator({ sagas: [saga] });
      await expect(orch.wait('nope', DONE)).rejects.toBeInstanceOf(ValidationError);
      const id = await orch.start('waiting', {});
      await expect(orch.wait(id, { timeoutMs: 30 })).rejects.toBeInstanceOf(TimeoutError);
      hang.open();
      expect((await orch.wait(id, DONE)).status).toBe('completed');
    });

    it('refuses bad definitions with a ConfigError naming the field', () => {
      const path = (f: () => unknown) => {
        try {
          f();
        } catch (err) {
          return (err as ConfigError).path;
        }
        return 'no error';
      };
      expect(path(() => defineSaga({ name: 'a.b', steps: [{ name: 's', action: () => 1 }] }))).toBe('name');
      expect(path(() => defineSaga({ name: 'a', steps: [] }))).toBe('steps');
      expect(
        path(() =>
          defineSaga({
            name: 'a',
            steps: [
              { name: 's', action: () => 1 },
              { name: 's', action: () => 2 },
            ],
          }),
        ),
      ).toBe('steps[1].name');
      expect(path(() => defineSaga({ name: 'a', steps: [{ name: 's', action: 5 as never }] }))).toBe('steps[0].action');
      expect(path(() => defineSaga({ name: 'a', steps: [{ name: 's', action: () => 1, timeoutMs: 0 }] }))).toBe(
        'steps[0].timeoutMs',
      );
      expect(
        path(() => defineSaga({ name: 'a', steps: [{ name: 's', action: () => 1, retry: { maxAttempts: 0 } }] })),
      ).toBe('steps[0].retry.maxAttempts');
    });
    sagaResumeTests(world);
  });
}
