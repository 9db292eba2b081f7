import {
  type Bus,
  type DeadLetter,
  jsonCodec,
  replayWorkflow,
  type SequenceStore,
  sequencing,
  UnrecoverableError,
} from '@agentbus/core';
import { until } from './wait.js';

/** {@link until}, describing the state when the wait gives up (a template string would show it as it was at the start). */
async function waitFor(condition: () => boolean | Promise<boolean>, timeoutMs: number, what: () => string) {
  try {
    await until(condition, timeoutMs);
  } catch (err) {
    throw new Error(`timed out after ${timeoutMs} ms waiting for ${what()}`, { cause: err });
  }
}

/** The data of every message the sequencing scenarios publish. */
interface Step {
  readonly wf: string;
  readonly seq: number;
}

export interface SequencingScenarioOptions {
  /** A bus with nothing subscribed yet; the scenario adds its middleware and subscription. */
  readonly bus: Bus;
  readonly store: SequenceStore;
  /** A topic of the scenario's own. */
  readonly topic: string;
  readonly group: string;
  readonly timeoutMs?: number;
}

export interface OrderedDeadLetterOptions extends SequencingScenarioOptions {
  /**
   * Handlers at once (default 4): the replayed later messages reach the middleware while the
   * replayed blocking one still runs, and must wait for it rather than be dead-lettered again.
   */
  readonly concurrency?: number;
}

/** What {@link sequencingScenario} saw. */
export interface SequencingScenarioResult {
  /** Sequence numbers handled, per workflow, in handling order. */
  readonly handled: ReadonlyMap<string, readonly number[]>;
  /** Failed runs of a2 (at least one). */
  readonly failures: number;
  /** What b and c had handled when a2 finally succeeded (all of it: they were not held). */
  readonly othersWhenA2Succeeded: ReadonlyMap<string, readonly number[]>;
  /** Deliveries the middleware acked as duplicates without running the handler. */
  readonly duplicates: number;
  /** Deliveries acked in all (handled or duplicate): one per published message. */
  readonly acked: number;
  /** Handled messages in all (each unique message once). */
  readonly handlerRuns: number;
}

/** Three workflows, numbered out of order, with a duplicate of b2. */
const ORDER_STEPS: readonly Step[] = [
  { wf: 'a', seq: 3 },
  { wf: 'b', seq: 2 },
  { wf: 'c', seq: 1 },
  { wf: 'a', seq: 1 },
  { wf: 'b', seq: 1 },
  { wf: 'c', seq: 3 },
  { wf: 'a', seq: 2 },
  { wf: 'b', seq: 4 },
  { wf: 'b', seq: 2 }, // the duplicate
  { wf: 'c', seq: 2 },
  { wf: 'a', seq: 5 },
  { wf: 'b', seq: 3 },
  { wf: 'a', seq: 4 },
];
const SIZES = { a: 5, b: 4, c: 3 } as const;

async function publishSteps(bus: Bus, topic: string, steps: readonly Step[]): Promise<void> {
  for (const s of steps) await bus.publish(topic, s, { workflowid: s.wf, sequence: s.seq });
}

const append = (m: Map<string, number[]>, s: Step) => m.set(s.wf, [...(m.get(s.wf) ?? []), s.seq]);

/**
 * Per-workflow order on the real transport, through `sequencing({ store })`: messages of three
 * workflows published with explicit sequence numbers out of order, one of them twice, on a
 * subscription handling four at a time. Each workflow must be handled in sequence order, each
 * message once (the duplicate acked unhandled). a2 fails on its first attempt and keeps failing
 * (retried) until b and c are fully handled: its failure holds a3…a5 and nothing of b or c.
 */
export async function sequencingScenario(o: SequencingScenarioOptions): Promise<SequencingScenarioResult> {
  const { bus, topic, group } = o;
  const seqr = sequencing({ store: o.store });
  let duplicates = 0;
  let acked = 0;
  bus.use({
    name: 'count-acked',
    async consume(ctx, next) {
      await next(); // a failure throws past this: the delivery is retried, not counted
      acked++;
      if (ctx.state.get('sequencing') === 'duplicate') duplicates++;
    },
  });
  bus.use(seqr);
  const handled = new Map<string, number[]>();
  let failures = 0;
  let handlerRuns = 0;
  let othersWhenA2Succeeded = new Map<string, number[]>();
  const othersDone = () => (handled.get('b')?.length ?? 0) >= SIZES.b && (handled.get('c')?.length ?? 0) >= SIZES.c;
  const sub = await bus.subscribe<Step>(
    topic,
    async (d) => {
      const s = d.data;
      if (s.wf === 'a' && s.seq === 2) {
        if (d.attempt === 1 || !othersDone()) {
          failures++;
          throw new Error(`the model call for a2 failed (attempt ${d.attempt})`);
        }
        othersWhenA2Succeeded = new Map([...handled].filter(([wf]) => wf !== 'a').map(([wf, l]) => [wf, [...l]]));
      }
      // Slow enough that the next message of a workflow would overtake a running one without the middleware.
      await new Promise((r) => setTimeout(r, 2));
      handlerRuns++;
      append(handled, s);
    },
    { group, concurrency: 4, prefetch: 32, maxAttempts: 1_000, backoff: { initialDelayMs: 5, maxDelayMs: 20 } },
  );
  try {
    await publishSteps(bus, topic, ORDER_STEPS);
    // Every published message acked once (handled, or acked as the duplicate), nothing held.
    await waitFor(
      () => acked >= ORDER_STEPS.length && seqr.held() === 0,
      o.timeoutMs ?? 20_000,
      () =>
        `every message acked (acked ${acked}/${ORDER_STEPS.length}, handled ${JSON.stringify(Object.fromEntries(handled))}, ` +
        `a2 failures ${failures}, duplicates ${duplicates}, held ${seqr.held()})`,
    );
  } finally {
    await sub.close();
    seqr.close();
  }
  return { handled, failures, othersWhenA2Succeeded, duplicates, acked, handlerRuns };
}

/** What {@link orderedDeadLetterScenario} saw. */
export interface OrderedDeadLetterResult {
  /** Handled before the replay, in order (`w1`, `x1` …). */
  readonly handledBeforeReplay: readonly string[];
  /** Dead-letter reasons of workflow w before the replay, by sequence number. */
  readonly deadBeforeReplay: ReadonlyMap<number, DeadLetter>;
  /** The workflow the store listed as blocked before the replay, and by which sequence. */
  readonly blockedBeforeReplay: readonly { workflowId: string; sequence: number | undefined }[];
  /** What replayWorkflow resolved with. */
  readonly replayed: number;
  /** Messages of w handled, in handling order, when everything was done. */
  readonly w: readonly number[];
  /** Messages of x handled, in handling order. */
  readonly x: readonly number[];
  /** Blocked workflows listed after the replay was handled (none). */
  readonly blockedAfter: number;
  /** Dead letters of the group left after the replay was handled (none). */
  readonly deadAfter: number;
}

/**
 * Order-preserving dead letters on the real transport, through `sequencing({ store,
 * preserveOrderOnDeadLetter: true })`: w2 fails with UnrecoverableError and is dead-lettered;
 * it blocks workflow w, so w3 and w4 are dead-lettered `workflow-blocked` instead of handled,
 * while workflow x goes on. Once the cause is fixed, `replayWorkflow` puts w2…w4 back in
 * sequence order and they are handled in order; the block is lifted.
 */
export async function orderedDeadLetterScenario(o: OrderedDeadLetterOptions): Promise<OrderedDeadLetterResult> {
  const { bus, topic, group } = o;
  const timeoutMs = o.timeoutMs ?? 12_000; // per wait, two of them
  const codec = jsonCodec();
  const seqr = sequencing({ store: o.store, preserveOrderOnDeadLetter: true });
  bus.use(seqr);
  let poisoned = true;
  const order: string[] = [];
  const handled = new Map<string, number[]>();
  const sub = await bus.subscribe<Step>(
    topic,
    async (d) => {
      const s = d.data;
      if (poisoned && s.wf === 'w' && s.seq === 2)
        throw new UnrecoverableError('the plan names a tool that does not exist');
      await new Promise((r) => setTimeout(r, 2));
      order.push(`${s.wf}${s.seq}`);
      append(handled, s);
    },
    {
      group,
      concurrency: o.concurrency ?? 4,
      prefetch: 32,
      maxAttempts: 5,
      backoff: { initialDelayMs: 5, maxDelayMs: 20 },
    },
  );
  const deadOfW = async () => {
    const byseq = new Map<number, DeadLetter>();
    for (const dl of await bus.transport.deadLetters.list({ group })) {
      const s = codec.decode(dl.message.body).data as Step;
      if (s.wf === 'w') byseq.set(s.seq, dl);
    }
    return byseq;
  };
  try {
    await publishSteps(bus, topic, [
      { wf: 'w', seq: 1 },
      { wf: 'w', seq: 2 },
      { wf: 'w', seq: 3 },
      { wf: 'x', seq: 1 },
      { wf: 'w', seq: 4 },
      { wf: 'x', seq: 2 },
    ]);
    let deadBeforeReplay = new Map<number, DeadLetter>();
    await waitFor(
      async () => {
        deadBeforeReplay = await deadOfW();
        return deadBeforeReplay.size >= 3 && handled.get('x')?.length === 2;
      },
      timeoutMs,
      () =>
        `w2…w4 dead-lettered and x handled (dead letters of w: ${[...deadBeforeReplay.keys()].join(', ') || 'none'}, handled ${order.join(' ')})`,
    );
    const handledBeforeReplay = [...order];
    const blockedBeforeReplay = (await o.store.listBlocked(group)).map((b) => ({
      workflowId: b.workflowId,
      sequence: b.block.sequence,
    }));
    poisoned = false; // the tool is deployed: replay the workflow
    const replayed = await replayWorkflow({ deadLetters: bus.transport.deadLetters, codec, workflowId: 'w', group });
    // Done when w2…w4 are handled, or as soon as one of them is dead-lettered again.
    let deadAfter = 0;
    await waitFor(
      async () => {
        deadAfter = (await bus.transport.deadLetters.list({ group })).length;
        return (handled.get('w')?.length ?? 0) >= 4 || deadAfter > 0;
      },
      timeoutMs,
      () => `w2…w4 handled after the replay (handled ${order.join(' ')})`,
    );
    return {
      handledBeforeReplay,
      deadBeforeReplay,
      blockedBeforeReplay,
      replayed,
      w: handled.get('w') ?? [],
      x: handled.get('x') ?? [],
      blockedAfter: (await o.store.listBlocked(group)).length,
      deadAfter,
    };
  } finally {
    await sub.close();
    seqr.close();
  }
}
