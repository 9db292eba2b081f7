import { ClosedError, defineSaga, ManualClock, UnrecoverableError } from '@agentbus/core';
import { expect, it } from 'vitest';
import { DONE, type Order, type SagaWorld, severable } from './saga-world.js';
import { until } from './wait.js';

/** Crashes, takeovers and hand-overs (registered by sagaBehaviourTests). */
export function sagaResumeTests(world: () => Promise<SagaWorld>): void {
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
}
