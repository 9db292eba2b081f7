import { randomUUID } from 'node:crypto';
import {
  createBus,
  type IdempotencyStore,
  type PublishItem,
  type SequenceStore,
  sequencing,
  silentLogger,
  type Transport,
} from '@agentbus/core';
import { startChild } from './child-process.js';
import { until } from './wait.js';

/** One recorded side effect of the chaos handler. */
export interface ChaosEffect {
  readonly workflowId: string;
  readonly seq: number;
  readonly messageId: string;
}

/**
 * The stores a chaos run uses, on the backend under test. `commit` writes the side effect and
 * marks the dedup key done in one atomic step (a transaction, a MULTI): the handler's effect.
 */
export interface ChaosStores {
  readonly sequence: SequenceStore;
  readonly idempotency: IdempotencyStore;
  commit(effect: ChaosEffect, dedupKey: string, ttlMs: number): Promise<void>;
  /** Effects in commit order. */
  effects(): Promise<ChaosEffect[]>;
  countEffects(): Promise<number>;
  close(): Promise<void>;
}

/** What a chaos fixture module exports; the child loads it by path. */
export interface ChaosFixture {
  createTransport(arg: string): Transport | Promise<Transport>;
  createChaosStores(arg: string): ChaosStores | Promise<ChaosStores>;
}

export interface ChaosOptions {
  /** Path of a module exporting {@link ChaosFixture}'s functions. */
  readonly fixtureModule: string;
  readonly fixtureArg: string;
  /** The same fixture, loaded in this process. */
  readonly fixture: ChaosFixture;
  readonly messages?: number;
  readonly workflows?: number;
  readonly kills?: number;
  readonly failureRate?: number;
  readonly ackTimeoutMs?: number;
  readonly prefetch?: number;
  readonly concurrency?: number;
  readonly random?: () => number;
  readonly log?: (line: string) => void;
}

export interface ChaosResult {
  readonly published: number;
  readonly effects: number;
  /** Messages whose effect was recorded more than once (must be 0). */
  readonly duplicates: number;
  /** Workflows whose effects are not in sequence order (must be 0). */
  readonly outOfOrder: number;
  readonly missing: number;
  readonly kills: number;
  readonly killPoints: readonly number[];
  /** Random handler failures thrown, as reported by the children. */
  readonly failures: number;
  readonly deadLetters: number;
  readonly seconds: number;
}

/**
 * Issue 6's chaos test: `messages` spread over `workflows` are published with sequence numbers
 * from the durable store, then consumed through retry + dedup + sequencing by a child process that
 * fails 10% of its handler calls at random and is SIGKILLed `kills` times; a last child finishes.
 * Every message's effect must be recorded exactly once, each workflow's in sequence order.
 */
export async function chaosRun(o: ChaosOptions): Promise<ChaosResult> {
  const started = Date.now();
  const n = o.messages ?? 20_000;
  const workflows = o.workflows ?? 100;
  const kills = o.kills ?? 10;
  const random = o.random ?? Math.random;
  const log = o.log ?? (() => {});
  const ackTimeoutMs = o.ackTimeoutMs ?? 1_000;
  const prefix = `chaos${randomUUID().replaceAll('-', '').slice(0, 10)}`;
  const topic = `${prefix}.work`;
  const group = `${prefix}-workers`;
  const stores = await o.fixture.createChaosStores(o.fixtureArg);
  const transport = await o.fixture.createTransport(o.fixtureArg);
  const bus = createBus({ transport, logger: silentLogger });
  const seq = sequencing({ store: stores.sequence });
  bus.use(seq);
  try {
    // Declare the group durably before publishing.
    await (await transport.subscribe(topic, { group, prefetch: 1, ackTimeoutMs })).close();
    const ids = new Set<string>();
    for (let i = 0; i < n; i += 500) {
      const items: PublishItem[] = [];
      for (let k = i; k < Math.min(n, i + 500); k++) {
        items.push({ topic, data: { n: k }, options: { workflowid: `${prefix}-wf${k % workflows}` } });
      }
      for (const env of await bus.publishBatch(items)) ids.add(env.id);
    }
    log(`published ${n} over ${workflows} workflows`);

    /** Where unfinished workflows stand, for a failure message. */
    const diagnose = async () => {
      const done = new Map<string, number>();
      for (const e of await stores.effects()) done.set(e.workflowId, (done.get(e.workflowId) ?? 0) + 1);
      const perWorkflow = Math.ceil(n / workflows);
      const stuck: string[] = [];
      for (let w = 0; w < workflows && stuck.length < 5; w++) {
        const wf = `${prefix}-wf${w}`;
        const total = n / workflows >= 1 ? Math.floor(n / workflows) + (w < n % workflows ? 1 : 0) : 0;
        const got = done.get(wf) ?? 0;
        if (got < total) {
          const expected = await stores.sequence.expected(group, wf);
          const blocked = await stores.sequence.blocked(group, wf);
          stuck.push(`${wf}: ${got}/${total} effects, store expects ${expected}${blocked ? ', blocked' : ''}`);
        }
      }
      const dead = await transport.deadLetters.list({ group, limit: 10 });
      return `per workflow ${perWorkflow}; unfinished: ${stuck.join('; ') || 'none'}; dead letters: ${dead.map((d) => `${d.reason} ${d.error ?? ''}`).join(' | ') || 'none'}`;
    };
    const argv = (final: boolean) => [
      o.fixtureModule,
      o.fixtureArg,
      topic,
      group,
      String(ackTimeoutMs),
      String(o.prefetch ?? 64),
      String(o.concurrency ?? 8),
      String(o.failureRate ?? 0.1),
      final ? 'final' : 'chaos',
    ];
    const killPoints: number[] = [];
    let failures = 0;
    const share = Math.max(1, Math.floor(n / (kills + 2)));
    for (let k = 0; k <= kills; k++) {
      const final = k === kills;
      const child = startChild('chaos-child', argv(final));
      const target = final ? Number.POSITIVE_INFINITY : 1 + Math.floor(random() * 2 * share);
      const handled = () => child.lines.filter((l) => l.id).length;
      try {
        await until(
          async () => handled() >= target || (await stores.countEffects()) >= n,
          final ? 120_000 : 60_000,
          `chaos child ${k} to handle ${final ? 'the rest' : target}`,
        );
        if (final) {
          // Let the last child settle what it holds, then check that nothing is left behind.
          await until(() => child.lines.some((l) => l.idle), 60_000, 'the child to go idle');
        }
      } catch (err) {
        throw new Error(
          `${(err as Error).message}: effects ${await stores.countEffects()}, ${await diagnose()}, stderr: ${child.stderr().slice(-2_000) || '(empty)'}`,
        );
      } finally {
        await child.kill();
      }
      failures += child.lines.filter((l) => l.failed).length;
      if (!final) killPoints.push(handled());
      log(`${final ? 'final child' : `kill ${k + 1}`}: handled ${handled()}, effects ${await stores.countEffects()}`);
    }

    const effects = await stores.effects();
    const seen = new Map<string, number>();
    const lastSeq = new Map<string, number>();
    let outOfOrder = 0;
    const disordered = new Set<string>();
    for (const e of effects) {
      seen.set(e.messageId, (seen.get(e.messageId) ?? 0) + 1);
      const prev = lastSeq.get(e.workflowId) ?? 0;
      if (e.seq !== prev + 1 && !disordered.has(e.workflowId)) {
        disordered.add(e.workflowId);
        outOfOrder++;
      }
      lastSeq.set(e.workflowId, e.seq);
    }
    let duplicates = 0;
    for (const c of seen.values()) if (c > 1) duplicates++;
    const missing = [...ids].filter((id) => !seen.has(id)).length;
    const deadLetters = (await transport.deadLetters.list({ group, limit: n })).length;
    return {
      published: n,
      effects: effects.length,
      duplicates,
      outOfOrder,
      missing,
      kills,
      killPoints,
      failures,
      deadLetters,
      seconds: Math.round((Date.now() - started) / 100) / 10,
    };
  } finally {
    seq.close();
    await bus.close();
    await stores.close();
  }
}
