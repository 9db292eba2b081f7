import { randomUUID } from 'node:crypto';
import {
  ClosedError,
  ConfigError,
  createBus,
  defineSaga,
  ManualClock,
  type SagaCompensationContext,
  type SagaEvent,
  SagaOrchestrator,
  type SagaOrchestratorOptions,
  type SagaRepository,
  type SagaState,
  type SagaStepContext,
  silentLogger,
  TimeoutError,
  type Transport,
  UnrecoverableError,
  ValidationError,
} from '@agentbus/core';
import { afterEach, describe, expect, it } from 'vitest';
import { gate, pubSubRequester, servePubSub } from './saga-fixtures.js';
import { until } from './wait.js';

export interface SagaBehaviourOptions {
  readonly name: string;
  /** A transport for a test's bus (one per test). */
  readonly transport: () => Transport | Promise<Transport>;
  /**
   * A repository; the same `name` must reach the same sagas — a new connection where the backend
   * has them (as a restarted process would get), the same instance for an in-process one.
   */
  readonly repository: (name: string) => SagaRepository & { close?(): unknown };
}

interface Order {
  orderId: string;
  total: number;
  log: string[];
}

let n = 0;
/** How long a test waits for a saga to end. */
const DONE = { timeoutMs: 10_000 };

/** `repo` as seen by a process whose connection closes once `dead()` holds (every call rejects with ClosedError). */
function severable(repo: SagaRepository, dead: () => boolean): SagaRepository {
  const guard =
    <A extends unknown[], R>(f: (...args: A) => Promise<R>) =>
    (...args: A): Promise<R> =>
      dead() ? Promise.reject(new ClosedError('connection closed')) : f(...args);
  return {
    create: guard((s) => repo.create(s)),
    get: guard((id) => repo.get(id)),
    save: guard((s) => repo.save(s)),
    list: guard((f) => repo.list(f)),
    delete: guard((id) => repo.delete(id)),
  };
}

/** The orchestrator's behaviour on a repository (memory, SQLite): steps, compensation, timeouts, resume, events, requests. */
export function sagaBehaviourTests(o: SagaBehaviourOptions): void {
  describe(`sagas on ${o.name}`, () => {
    const cleanups: (() => unknown)[] = [];
    const gates: (() => void)[] = [];
    afterEach(async () => {
      // Open every gate first, so that a failed test's hanging step does not hang its cleanup.
      for (const open of gates.splice(0)) open();
      for (const c of cleanups.splice(0).reverse()) await c();
    });

    /** One test's world: a bus, a repository name, unique topics, orchestrators closed afterwards. */
    async function world() {
      const id = `s${process.pid}x${Date.now().toString(36)}x${n++}`;
      const prefix = `sg${randomUUID().replaceAll('-', '').slice(0, 10)}`;
      const bus = createBus({ transport: await o.transport(), logger: silentLogger, source: 'saga-test' });
      cleanups.push(() => bus.close());
      const repository = () => {
        const r = o.repository(id);
        cleanups.push(() => r.close?.());
        return r;
      };
      const repo = repository();
      const orchestrator = (options: Partial<SagaOrchestratorOptions> & Pick<SagaOrchestratorOptions, 'sagas'>) => {
        const orch = new SagaOrchestrator({
          bus,
          repository: repo,
          logger: silentLogger,
          topicPrefix: `${prefix}saga`,
          ...options,
        });
        cleanups.push(() => orch.close());
        return orch;
      };
      /** Records saga events (subscribe before starting sagas). */
      const observe = async () => {
        const events: { data: SagaEvent; topic: string; workflowid: string | undefined }[] = [];
        const sub = await bus.subscribe<SagaEvent>(`${prefix}saga.>`, (d) => {
          events.push({ data: d.data, topic: d.envelope.topic, workflowid: d.envelope.workflowid });
        });
        cleanups.push(() => sub.close());
        return events;
      };
      /** A gate that is opened at the latest when the test ends (so a failed test does not hang its cleanup). */
      const hold = () => {
        const g = gate();
        gates.push(() => g.open());
        return g;
      };
      return { bus, repo, repository, orchestrator, observe, prefix, hold };
    }

    const stepView = (s: SagaState) => s.steps.map((st) => `${st.name}:${st.status}`);

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

    it('resumes a crashed orchestrator’s saga: the step that was running is run again, nothing before it', async () => {
      const w = await world();
      const runs: string[] = [];
      const hang = w.hold();
      const steps = (who: string) =>
        defineSaga<Order>({
          name: 'resumable',
          steps: [
            { name: 'one', action: () => runs.push(`${who} one`) },
            {
              name: 'two',
              action: async (ctx) => {
                runs.push(`${who} two attempt=${ctx.attempt} resumed=${ctx.resumed}`);
                if (who === 'first') await hang.wait(); // the process "dies" here
                ctx.payload.log.push(`two by ${who}`);
                return who;
              },
            },
            { name: 'three', action: () => runs.push(`${who} three`) },
          ],
        });
      const first = w.orchestrator({ sagas: [steps('first')], ownerId: 'orchestrator-1' });
      const id = await first.start('resumable', { orderId: 'r', total: 1, log: [] });
      await until(() => hang.reached, 10_000, 'step two to start');
      // The restarted process: the same owner id, a new connection to the same repository.
      const second = w.orchestrator({
        sagas: [steps('second')],
        ownerId: 'orchestrator-1',
        repository: w.repository(),
      });
      expect(await second.resume()).toEqual([id]);
      const s = await second.wait(id, DONE);
      expect(s.status).toBe('completed');
      expect(runs).toEqual([
        'first one',
        'first two attempt=1 resumed=false',
        'second two attempt=2 resumed=true',
        'second three',
      ]);
      expect(s.steps[1]).toMatchObject({ result: 'second', attempts: 2, interruptions: 1 });
      expect(s.payload).toEqual({ orderId: 'r', total: 1, log: ['two by second'] });
      // The old one comes back to life: its write is refused and it lets go.
      hang.open();
      await until(() => first.active === 0, 10_000, 'the old orchestrator to let go');
      expect(await w.repo.get(id)).toEqual(s);
      expect(await first.wait(id, DONE)).toEqual(s);
    });

    it('takes a saga over from another orchestrator only once its lease has passed', async () => {
      const w = await world();
      const clock = new ManualClock();
      const hang = w.hold();
      const saga = (who: string) =>
        defineSaga<Order>({
          name: 'leased',
          steps: [
            {
              name: 'only',
              action: async () => {
                if (who === 'a') await hang.wait();
                return who;
              },
            },
          ],
        });
      // a's process dies in the step: its connection goes, so it can no longer renew its lease.
      let dead = false;
      const a = w.orchestrator({
        sagas: [saga('a')],
        ownerId: 'a',
        clock,
        leaseMs: 1_000,
        repository: severable(w.repo, () => dead),
      });
      const id = await a.start('leased', { orderId: 'l', total: 1, log: [] });
      await until(() => hang.reached, 10_000, 'the step to start');
      dead = true;
      const b = w.orchestrator({ sagas: [saga('b')], ownerId: 'b', clock, leaseMs: 1_000, scanIntervalMs: 0 });
      expect(await b.resume()).toEqual([]);
      expect((await w.repo.get(id))?.owner).toBe('a');
      clock.advance(1_001);
      expect(await b.resume()).toEqual([id]);
      const s = await b.wait(id, DONE);
      expect(s).toMatchObject({ status: 'completed', steps: [{ result: 'b', interruptions: 1 }] });
      hang.open();
      await until(() => a.active === 0, 10_000, 'a to let go');
      expect(await w.repo.get(id)).toEqual(s);
    });

    it('resumes a saga that crashed while compensating: the compensation runs again', async () => {
      const w = await world();
      const undone: string[] = [];
      const hang = w.hold();
      const saga = (who: string) =>
        defineSaga<Order>({
          name: 'undo-crash',
          steps: [
            {
              name: 'one',
              action: () => 'r1',
              compensate: async (ctx) => {
                undone.push(`${who} undo one attempt=${ctx.attempt} resumed=${ctx.resumed} result=${ctx.result}`);
                if (who === 'first') await hang.wait();
              },
            },
            { name: 'two', action: () => Promise.reject(new UnrecoverableError('no')) },
          ],
        });
      const first = w.orchestrator({ sagas: [saga('first')], ownerId: 'o' });
      const id = await first.start('undo-crash', { orderId: 'u', total: 1, log: [] });
      await until(() => hang.reached, 10_000, 'the compensation to start');
      const second = w.orchestrator({ sagas: [saga('second')], ownerId: 'o', repository: w.repository() });
      expect(await second.resume()).toEqual([id]);
      expect((await second.wait(id, DONE)).status).toBe('compensated');
      expect(undone).toEqual([
        'first undo one attempt=1 resumed=false result=r1',
        'second undo one attempt=2 resumed=true result=r1',
      ]);
      hang.open();
    });

    it('fails a step cut short more than maxInterruptions times and compensates it as uncertain', async () => {
      const w = await world();
      const undone: string[] = [];
      const hang = w.hold();
      const saga = (who: string) =>
        defineSaga<Order>({
          name: 'crash-loop',
          steps: [
            { name: 'one', action: () => 'r1', compensate: (ctx) => undone.push(`one ${ctx.result} ${ctx.uncertain}`) },
            {
              name: 'two',
              action: async () => {
                if (who === 'first') await hang.wait();
                return 'r2';
              },
              compensate: (ctx) => undone.push(`two ${ctx.result} ${ctx.uncertain}`),
            },
          ],
        });
      const first = w.orchestrator({ sagas: [saga('first')], ownerId: 'o', maxInterruptions: 0 });
      const id = await first.start('crash-loop', { orderId: 'c', total: 1, log: [] });
      await until(() => hang.reached, 10_000, 'step two to start');
      const second = w.orchestrator({
        sagas: [saga('second')],
        ownerId: 'o',
        maxInterruptions: 0,
        repository: w.repository(),
      });
      await second.resume();
      const s = await second.wait(id, DONE);
      expect(s.status).toBe('compensated');
      expect(s.steps[1]).toMatchObject({ uncertain: true, error: { code: 'SAGA_INTERRUPTED' } });
      expect(undone).toEqual(['two undefined true', 'one r1 false']);
      hang.open();
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
      cleanups.push(() => fixture.close());
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

    it('on close lets the running step finish, then releases the saga for another orchestrator at once', async () => {
      const w = await world();
      const hang = w.hold();
      const saga = defineSaga<Order>({
        name: 'handover',
        steps: [
          {
            name: 'one',
            action: async (ctx) => {
              if (ctx.payload.orderId === 'h') await hang.wait();
              return 'one done';
            },
          },
          { name: 'two', action: () => 'two done' },
        ],
      });
      const a = w.orchestrator({ sagas: [saga], ownerId: 'a' });
      const id = await a.start('handover', { orderId: 'h', total: 1, log: [] });
      await until(() => hang.reached, 10_000, 'step one to start');
      const closing = a.close();
      hang.open();
      await closing;
      const left = await w.repo.get(id);
      expect(left).toMatchObject({ status: 'running', steps: [{ status: 'succeeded' }, { status: 'pending' }] });
      expect(left?.owner).toBeUndefined();
      await expect(a.start('handover', { orderId: 'x', total: 1, log: [] })).rejects.toBeInstanceOf(ClosedError);
      const b = w.orchestrator({ sagas: [saga], ownerId: 'b' });
      expect(await b.resume()).toEqual([id]);
      expect((await b.wait(id, DONE)).steps.map((s) => s.result)).toEqual(['one done', 'two done']);
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
  });
}

export interface SagaTransportScenarioOptions {
  readonly name: string;
  /** A new client of the backend: the orchestrator and the agent each get their own, as two processes would. */
  readonly open: () => Transport | Promise<Transport>;
  /** The repository the orchestrator keeps its sagas in (SQLite, Redis). */
  readonly repository: () => SagaRepository & { close?(): unknown };
  readonly skipReason?: string | undefined;
}

interface Purchase {
  sku: string;
  qty: number;
  price: number;
  total?: number;
}

/**
 * End to end over a transport: an orchestrator runs a purchase saga whose steps ask a payments
 * agent and an inventory agent (on another client of the transport) with `bus.request`; one saga
 * completes, one is compensated with a refund request carrying the charge's result; an observer
 * on a third client sees the saga events.
 */
export function sagaTransportScenario(o: SagaTransportScenarioOptions): void {
  describe.skipIf(o.skipReason)(`sagas end to end on ${o.name}`, () => {
    it('runs sagas whose steps ask another agent over the transport; one completes, one is compensated by a request', async () => {
      const prefix = `sg${randomUUID().replaceAll('-', '').slice(0, 10)}`;
      const cleanups: (() => unknown)[] = [];
      try {
        const bus = async (source: string) => {
          const b = createBus({ transport: await o.open(), logger: silentLogger, source });
          cleanups.push(() => b.close());
          return b;
        };
        const agent = await bus('payments-agent');
        const orchestratorBus = await bus('orchestrator');
        const observerBus = await bus('observer');
        const seen: string[] = [];
        await agent.reply<{ amount: number }>(`${prefix}.payments.charge`, (d) => {
          seen.push(`charge ${d.data.amount} ${d.envelope.workflowid}`);
          return { chargeId: `ch-${d.envelope.workflowid}`, amount: d.data.amount };
        });
        await agent.reply<{ chargeId: string }>(`${prefix}.payments.refund`, (d) => {
          seen.push(`refund ${d.data.chargeId}`);
          return { refunded: d.data.chargeId };
        });
        await agent.reply<{ sku: string; qty: number }>(`${prefix}.inventory.reserve`, (d) => {
          seen.push(`reserve ${d.data.sku} ${d.envelope.workflowid}`);
          if (d.data.sku === 'sold-out') throw new UnrecoverableError(`no ${d.data.sku} left`);
          return { reservation: `res-${d.data.sku}` };
        });
        const events: { event: string; workflowid: string | undefined }[] = [];
        await observerBus.subscribe<SagaEvent>(`${prefix}saga.>`, (d) => {
          events.push({ event: d.data.event, workflowid: d.envelope.workflowid });
        });
        const repository = o.repository();
        cleanups.push(() => repository.close?.());
        const saga = defineSaga<Purchase>({
          name: 'purchase',
          steps: [
            {
              name: 'price',
              action: (ctx) => {
                ctx.payload.total = ctx.payload.qty * ctx.payload.price;
              },
            },
            {
              name: 'charge',
              timeoutMs: 20_000,
              action: { topic: `${prefix}.payments.charge`, data: (ctx) => ({ amount: ctx.payload.total }) },
              compensate: {
                topic: `${prefix}.payments.refund`,
                data: (ctx: SagaCompensationContext<Purchase, { chargeId: string }>) => ({
                  chargeId: ctx.result?.chargeId,
                }),
              },
            },
            {
              name: 'reserve',
              timeoutMs: 20_000,
              action: (ctx) =>
                ctx.request(`${prefix}.inventory.reserve`, { sku: ctx.payload.sku, qty: ctx.payload.qty }),
            },
          ],
        });
        const orch = new SagaOrchestrator({
          bus: orchestratorBus,
          repository,
          sagas: [saga],
          logger: silentLogger,
          topicPrefix: `${prefix}saga`,
        });
        cleanups.push(() => orch.close());
        const ok = await orch.start('purchase', { sku: 'tea', qty: 3, price: 4 }, { id: `${prefix}-ok` });
        const bad = await orch.start('purchase', { sku: 'sold-out', qty: 1, price: 9 }, { id: `${prefix}-bad` });
        const done = await orch.wait(ok, { timeoutMs: 30_000 });
        const undone = await orch.wait(bad, { timeoutMs: 30_000 });
        expect(done.status).toBe('completed');
        expect(done.payload).toEqual({ sku: 'tea', qty: 3, price: 4, total: 12 });
        expect(done.steps.map((s) => s.result)).toEqual([
          undefined,
          { chargeId: `ch-${ok}`, amount: 12 },
          { reservation: 'res-tea' },
        ]);
        expect(undone).toMatchObject({
          status: 'compensated',
          error: { code: 'UNRECOVERABLE', message: 'no sold-out left' },
        });
        expect(undone.steps.map((s) => s.status)).toEqual(['compensated', 'compensated', 'failed']);
        expect(seen.filter((s) => s.includes(ok))).toEqual([`charge 12 ${ok}`, `reserve tea ${ok}`]);
        expect(seen.filter((s) => s.includes(bad))).toEqual([
          `charge 9 ${bad}`,
          `reserve sold-out ${bad}`,
          `refund ch-${bad}`,
        ]);
        // Events go to a topic each, and not every transport keeps order across topics: compare as sets.
        const of = (id: string) =>
          events
            .filter((e) => e.workflowid === id)
            .map((e) => e.event)
            .sort();
        await until(() => of(ok).length >= 5 && of(bad).length >= 7, 20_000, 'the saga events');
        expect(of(ok)).toEqual(['completed', 'started', 'step-succeeded', 'step-succeeded', 'step-succeeded']);
        expect(of(bad)).toEqual(
          [
            'started',
            'step-succeeded',
            'step-succeeded',
            'step-failed',
            'compensating',
            'step-compensated',
            'compensated',
          ].sort(),
        );
      } finally {
        for (const c of cleanups.reverse()) await c();
      }
    }, 60_000);
  });
}
