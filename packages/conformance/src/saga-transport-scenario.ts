import { randomUUID } from 'node:crypto';
import {
  createBus,
  defineSaga,
  type SagaCompensationContext,
  type SagaEvent,
  SagaOrchestrator,
  type SagaRepository,
  silentLogger,
  type Transport,
  UnrecoverableError,
} from '@agentbus/core';
import { describe, expect, it } from 'vitest';
import { until } from './wait.js';

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
