import { until } from '@agentbus/conformance';
import {
  type Bus,
  ConfigError,
  createBus,
  jsonCodec,
  ManualClock,
  memorySequenceStore,
  memoryTransport,
  replayWorkflow,
  type SequenceStore,
  sequencing,
  UnrecoverableError,
} from '@agentbus/core';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';

type Step = { wf: string; seq: number };

/** Publishes explicitly numbered messages (no assignment) in the given order. */
async function publishSteps(bus: Bus, topic: string, steps: readonly Step[]) {
  for (const s of steps) {
    await bus.publish(topic, s, { workflowid: s.wf, sequence: s.seq });
  }
}

describe('sequencing middleware', () => {
  it('numbers messages per workflow at publish, and a new bus over the same store continues the count', async () => {
    const store = memorySequenceStore();
    const bus = createBus({ transport: memoryTransport() });
    bus.use(sequencing({ store }));
    const a1 = await bus.publish('seq.n', {}, { workflowid: 'a' });
    const a2 = await bus.publish('seq.n', {}, { workflowid: 'a' });
    const b1 = await bus.publish('seq.n', {}, { workflowid: 'b' });
    const plain = await bus.publish('seq.n', {});
    await bus.close();
    const again = createBus({ transport: memoryTransport() });
    again.use(sequencing({ store }));
    const a3 = await again.publish('seq.n', {}, { workflowid: 'a' });
    expect([a1.sequence, a2.sequence, b1.sequence, a3.sequence]).toEqual([1, 2, 1, 3]);
    expect(plain.sequence).toBeUndefined();
    await again.close();
  });

  it('handles each workflow in sequence order whatever the arrival order, without holding concurrency slots', async () => {
    const seqr = sequencing({ store: memorySequenceStore() });
    const bus = createBus({ transport: memoryTransport() });
    bus.use(seqr);
    const seen = new Map<string, number[]>();
    // One slot: held messages must give it up, or the missing one could never run.
    await bus.subscribe<Step>(
      'seq.order',
      (d) => {
        seen.set(d.data.wf, [...(seen.get(d.data.wf) ?? []), d.data.seq]);
      },
      { group: 'g', concurrency: 1, prefetch: 16 },
    );
    await publishSteps(bus, 'seq.order', [
      { wf: 'a', seq: 3 },
      { wf: 'b', seq: 2 },
      { wf: 'a', seq: 2 },
      { wf: 'b', seq: 1 },
      { wf: 'a', seq: 1 },
      { wf: 'a', seq: 2 }, // a duplicate
    ]);
    await until(() => seen.get('a')?.length === 3 && seen.get('b')?.length === 2, 5_000, 'all handled');
    expect(seen.get('a')).toEqual([1, 2, 3]);
    expect(seen.get('b')).toEqual([1, 2]);
    await until(() => seqr.held() === 0, 2_000, 'nothing held');
    await bus.close();
    seqr.close();
  });

  it('holds later messages while an earlier one is retried, and handles them after it', async () => {
    const seqr = sequencing({ store: memorySequenceStore() });
    const bus = createBus({ transport: memoryTransport() });
    bus.use(seqr);
    const order: number[] = [];
    let failures = 0;
    await bus.subscribe<Step>(
      'seq.retry',
      (d) => {
        if (d.data.seq === 2 && failures < 2) {
          failures++;
          throw new Error('model call failed');
        }
        order.push(d.data.seq);
      },
      { group: 'g', concurrency: 4, prefetch: 16, backoff: { initialDelayMs: 5, maxDelayMs: 5 } },
    );
    await publishSteps(
      bus,
      'seq.retry',
      [1, 2, 3, 4, 5].map((seq) => ({ wf: 'w', seq })),
    );
    await until(() => order.length === 5, 5_000, 'five handled');
    expect(order).toEqual([1, 2, 3, 4, 5]);
    expect(failures).toBe(2);
    await bus.close();
    seqr.close();
  });

  it('releases past a gap after the gap timeout, reports it, and dead-letters the missing message if it comes late', async () => {
    const clock = new ManualClock();
    const gaps: unknown[] = [];
    // Counts the background check's reads, to know that checks ran without waiting a fixed time.
    const inner = memorySequenceStore();
    let reads = 0;
    const store: SequenceStore = {
      ...inner,
      expected: (g, wf) => {
        reads++;
        return inner.expected(g, wf);
      },
    };
    const seqr = sequencing({
      store,
      clock,
      gapTimeoutMs: 10_000,
      checkEveryMs: 5,
      onGapReport: (g) => gaps.push(g),
    });
    const transport = memoryTransport();
    const bus = createBus({ transport });
    bus.use(seqr);
    const order: number[] = [];
    await bus.subscribe<Step>('seq.gap', (d) => void order.push(d.data.seq), { group: 'g', prefetch: 16 });
    await publishSteps(
      bus,
      'seq.gap',
      [1, 3, 4].map((seq) => ({ wf: 'w', seq })),
    );
    await until(() => order.length === 1 && seqr.held() === 2, 5_000, '3 and 4 held');
    clock.advance(9_000);
    const before = reads;
    await until(() => reads >= before + 3, 5_000, 'three checks after the clock moved');
    expect(order).toEqual([1]); // not timed out yet
    clock.advance(1_000);
    await until(() => order.length === 3, 5_000, 'released past the gap');
    expect(order).toEqual([1, 3, 4]);
    expect(gaps).toMatchObject([{ group: 'g', workflowId: 'w', from: 2, to: 2, action: 'released' }]);
    expect(seqr.gaps()).toHaveLength(1);
    await publishSteps(bus, 'seq.gap', [{ wf: 'w', seq: 2 }]);
    await until(
      async () => (await transport.deadLetters.list({ group: 'g' })).length === 1,
      5_000,
      'late one dead-lettered',
    );
    const [late] = await transport.deadLetters.list({ group: 'g' });
    expect(late?.reason).toBe('sequence-late');
    expect(order).toEqual([1, 3, 4]);
    await bus.close();
    seqr.close();
  });

  it('does not time a gap out while the missing message is running or being retried', async () => {
    const clock = new ManualClock();
    const seqr = sequencing({ store: memorySequenceStore(), clock, gapTimeoutMs: 10_000, checkEveryMs: 5 });
    const bus = createBus({ transport: memoryTransport() });
    bus.use(seqr);
    const order: number[] = [];
    let release!: () => void;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    let firstRuns = 0;
    await bus.subscribe<Step>(
      'seq.slow',
      async (d) => {
        if (d.data.seq === 1 && ++firstRuns === 1) {
          await gate;
          throw new Error('the model call timed out');
        }
        order.push(d.data.seq);
      },
      // The retry waits long enough for many gap checks to run meanwhile.
      { group: 'g', concurrency: 2, prefetch: 16, backoff: { initialDelayMs: 100, maxDelayMs: 100, jitter: 'none' } },
    );
    await publishSteps(bus, 'seq.slow', [{ wf: 'w', seq: 1 }]);
    await until(() => firstRuns === 1, 5_000, '1 running');
    await publishSteps(
      bus,
      'seq.slow',
      [2, 3].map((seq) => ({ wf: 'w', seq })),
    );
    await until(() => seqr.held() === 2, 5_000, '2 and 3 held behind the running 1');
    clock.advance(9_000); // short of the gap timeout, counted from when 2 and 3 began to wait
    release();
    await until(() => order.length === 3, 5_000, 'all three');
    expect(order).toEqual([1, 2, 3]);
    expect(seqr.gaps()).toEqual([]);
    await bus.close();
    seqr.close();
  });

  it("with onGap 'dead-letter' dead-letters what waits behind a gap, and replayWorkflow brings it back in order", async () => {
    const clock = new ManualClock();
    const seqr = sequencing({
      store: memorySequenceStore(),
      clock,
      gapTimeoutMs: 1_000,
      checkEveryMs: 5,
      onGap: 'dead-letter',
    });
    const transport = memoryTransport();
    const bus = createBus({ transport });
    bus.use(seqr);
    const order: number[] = [];
    await bus.subscribe<Step>('seq.gapdl', (d) => void order.push(d.data.seq), { group: 'g', prefetch: 16 });
    await publishSteps(
      bus,
      'seq.gapdl',
      [1, 4, 3].map((seq) => ({ wf: 'w', seq })),
    );
    await until(() => seqr.held() === 2, 5_000, '3 and 4 held');
    clock.advance(1_000);
    await until(async () => (await transport.deadLetters.list({ group: 'g' })).length === 2, 5_000, 'two dead letters');
    const dead = await transport.deadLetters.list({ group: 'g' });
    expect(dead.map((d) => d.reason)).toEqual(['sequence-gap', 'sequence-gap']);
    expect(seqr.gaps()).toMatchObject([{ from: 2, to: 2, action: 'dead-lettered' }]);
    await publishSteps(bus, 'seq.gapdl', [{ wf: 'w', seq: 2 }]);
    await until(() => order.length === 2, 5_000, '2 handled');
    const replayed = await replayWorkflow({
      deadLetters: transport.deadLetters,
      codec: jsonCodec(),
      workflowId: 'w',
      group: 'g',
    });
    expect(replayed).toBe(2);
    await until(() => order.length === 4, 5_000, 'replayed ones handled');
    expect(order).toEqual([1, 2, 3, 4]);
    await bus.close();
    seqr.close();
  });

  it('order-preserving dead letters: a dead letter blocks its workflow until it is replayed, then all go in order', async () => {
    const store = memorySequenceStore();
    const seqr = sequencing({ store, preserveOrderOnDeadLetter: true });
    const transport = memoryTransport();
    const bus = createBus({ transport });
    bus.use(seqr);
    const order: string[] = [];
    await bus.subscribe<Step>(
      'seq.block',
      (d) => {
        if (d.data.wf === 'w' && d.data.seq === 2 && (d.transportHeaders['x-agentbus-replays'] ?? '0') === '0') {
          throw new UnrecoverableError('bad tool call');
        }
        order.push(`${d.data.wf}${d.data.seq}`);
      },
      { group: 'g', prefetch: 16 },
    );
    await publishSteps(bus, 'seq.block', [
      { wf: 'w', seq: 1 },
      { wf: 'w', seq: 2 },
      { wf: 'w', seq: 3 },
      { wf: 'other', seq: 1 },
      { wf: 'w', seq: 4 },
    ]);
    await until(
      async () => (await transport.deadLetters.list({ group: 'g' })).length === 3,
      5_000,
      'three dead letters',
    );
    await until(() => order.includes('other1'), 5_000, 'the other workflow goes on');
    const dead = await transport.deadLetters.list({ group: 'g' });
    expect(dead.map((d) => d.reason)).toEqual(['unrecoverable', 'workflow-blocked', 'workflow-blocked']);
    expect(await store.listBlocked('g')).toMatchObject([{ workflowId: 'w', block: { sequence: 2 } }]);
    expect(order).toEqual(['w1', 'other1']);
    // Blocked: even a new message of the workflow waits in the dead-letter store.
    await publishSteps(bus, 'seq.block', [{ wf: 'w', seq: 5 }]);
    await until(
      async () => (await transport.deadLetters.list({ group: 'g' })).length === 4,
      5_000,
      'fourth dead letter',
    );
    expect(await replayWorkflow({ deadLetters: transport.deadLetters, codec: jsonCodec(), workflowId: 'w' })).toBe(4);
    await until(() => order.length === 6, 5_000, 'the workflow handled');
    expect(order).toEqual(['w1', 'other1', 'w2', 'w3', 'w4', 'w5']);
    expect(await store.listBlocked()).toEqual([]);
    await bus.close();
    seqr.close();
  });

  it('skip lifts a block without the blocking message; later messages flow again', async () => {
    const store = memorySequenceStore();
    // No numbering: unsequenced messages of a workflow are blocked too, in arrival order.
    const seqr = sequencing({ store, preserveOrderOnDeadLetter: true, assign: false });
    const transport = memoryTransport();
    const bus = createBus({ transport });
    bus.use(seqr);
    const order: string[] = [];
    await bus.subscribe<{ n: number }>(
      'seq.skip',
      (d) => {
        if (d.data.n === 1) throw new UnrecoverableError('poison');
        order.push(`n${d.data.n}`);
      },
      { group: 'g', prefetch: 8 },
    );
    await bus.publish('seq.skip', { n: 1 }, { workflowid: 'u' });
    await until(async () => (await store.listBlocked('g')).length === 1, 5_000, 'blocked');
    await bus.publish('seq.skip', { n: 2 }, { workflowid: 'u' });
    await until(
      async () => (await transport.deadLetters.list({ reason: 'workflow-blocked' })).length === 1,
      5_000,
      'n2 held back',
    );
    expect(await seqr.skip('g', 'u')).toBe(true);
    expect(await seqr.skip('g', 'u')).toBe(false);
    await bus.publish('seq.skip', { n: 3 }, { workflowid: 'u' });
    await until(() => order.length === 1, 5_000, 'n3 handled');
    expect(order).toEqual(['n3']);
    await bus.close();
    seqr.close();
  });

  it('counts a message the handler acked itself as done, and one it dead-lettered itself as blocking', async () => {
    const store = memorySequenceStore();
    const seqr = sequencing({ store, preserveOrderOnDeadLetter: true });
    const transport = memoryTransport();
    const bus = createBus({ transport });
    bus.use(seqr);
    const order: number[] = [];
    await bus.subscribe<Step>(
      'seq.self',
      async (d) => {
        if (d.data.seq === 3) {
          await d.deadLetter('invalid-plan', { error: 'the plan names no tool' });
          return;
        }
        order.push(d.data.seq);
        await d.ack();
      },
      { group: 'g', prefetch: 8 },
    );
    await publishSteps(
      bus,
      'seq.self',
      [2, 1, 3, 4].map((seq) => ({ wf: 'w', seq })),
    );
    await until(async () => (await transport.deadLetters.list({ group: 'g' })).length === 2, 5_000, 'two dead letters');
    expect(order).toEqual([1, 2]);
    const dead = await transport.deadLetters.list({ group: 'g' });
    expect(dead.map((d) => d.reason)).toEqual(['invalid-plan', 'workflow-blocked']);
    expect(await store.blocked('g', 'w')).toMatchObject({ sequence: 3 });
    await bus.close();
    seqr.close();
  });

  it('hands held messages back when the bus closes, and the next consumer handles them in order', async () => {
    const store = memorySequenceStore();
    const transport = memoryTransport();
    const first = createBus({ transport, ownsTransport: false });
    const seqr = sequencing({ store });
    first.use(seqr);
    await first.subscribe('seq.close', () => {}, { group: 'g', prefetch: 8 });
    await publishSteps(
      first,
      'seq.close',
      [3, 2].map((seq) => ({ wf: 'w', seq })),
    );
    await until(() => seqr.held() === 2, 5_000, 'held');
    await first.close();
    expect(seqr.held()).toBe(0);
    seqr.close();
    const second = createBus({ transport });
    const seqr2 = sequencing({ store });
    second.use(seqr2);
    const order: number[] = [];
    await second.subscribe<Step>('seq.close', (d) => void order.push(d.data.seq), { group: 'g', prefetch: 8 });
    await publishSteps(second, 'seq.close', [{ wf: 'w', seq: 1 }]);
    await until(() => order.length === 3, 5_000, 'all three');
    expect(order).toEqual([1, 2, 3]);
    await second.close();
    seqr2.close();
  });

  it('property: any interleaving with duplicates of several workflows is handled in order, once each', async () => {
    const input = fc.array(fc.integer({ min: 1, max: 12 }), { minLength: 3, maxLength: 3 }).chain((sizes) => {
      const all: Step[] = sizes.flatMap((n, w) => Array.from({ length: n }, (_, i) => ({ wf: `w${w}`, seq: i + 1 })));
      return fc
        .array(fc.constantFrom(...all), { maxLength: 6 })
        .chain((dups) => fc.shuffledSubarray([...all, ...dups], { minLength: all.length + dups.length }))
        .map((steps) => ({ sizes, steps }));
    });
    await fc.assert(
      fc.asyncProperty(input, async ({ sizes, steps }) => {
        const store: SequenceStore = memorySequenceStore();
        const seqr = sequencing({ store });
        const bus = createBus({ transport: memoryTransport() });
        bus.use(seqr);
        const seen = new Map<string, number[]>();
        await bus.subscribe<Step>(
          'seq.prop',
          async (d) => {
            await new Promise((r) => setImmediate(r));
            seen.set(d.data.wf, [...(seen.get(d.data.wf) ?? []), d.data.seq]);
          },
          { group: 'g', concurrency: 3, prefetch: 64 },
        );
        await publishSteps(bus, 'seq.prop', steps);
        const total = sizes.reduce((a, b) => a + b, 0);
        await until(() => [...seen.values()].reduce((a, l) => a + l.length, 0) >= total, 5_000, 'all handled');
        await until(() => seqr.held() === 0, 5_000, 'duplicates settled');
        await bus.close();
        seqr.close();
        sizes.forEach((n, w) => {
          expect(seen.get(`w${w}`)).toEqual(Array.from({ length: n }, (_, i) => i + 1));
        });
      }),
      { numRuns: 25 },
    );
  });

  it('refuses bad options', () => {
    expect(() => sequencing({} as never)).toThrow(ConfigError);
    expect(() => sequencing({ store: memorySequenceStore(), onGap: 'drop' as never })).toThrow(ConfigError);
    expect(() => sequencing({ store: memorySequenceStore(), gapTimeoutMs: 0 })).toThrow(ConfigError);
  });
});
