import { randomUUID } from 'node:crypto';
import type { Transport } from '@agentbus/core';
import { startConsumerChild } from './child-process.js';
import { Reader, until } from './wait.js';

export interface CrashSoakOptions {
  /** Opens a client of the backend in this process. */
  readonly open: () => Transport | Promise<Transport>;
  /** Module exporting `createTransport(arg)`, loaded by the child consumer. */
  readonly childModule: string;
  readonly childArg: string;
  readonly messages?: number;
  readonly kills?: number;
  readonly ackTimeoutMs?: number;
  readonly prefetch?: number;
  /** Random source, injectable for a reproducible run. */
  readonly random?: () => number;
  readonly log?: (line: string) => void;
}

export interface CrashSoakResult {
  readonly published: number;
  /** Distinct messages processed at least once. */
  readonly processed: number;
  /** Deliveries beyond the first per message (the price of at-least-once). */
  readonly redeliveries: number;
  readonly kills: number;
  /** Messages processed by children before each kill. */
  readonly killPoints: readonly number[];
  readonly deadLetters: number;
}

/** Publishes `n` messages `{"n":0}` … on `topic`, 500 per batch; resolves with their ids in order. */
export async function publishNumbered(t: Transport, topic: string, n: number): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < n; i += 500) {
    const batch = Array.from({ length: Math.min(500, n - i) }, (_, k) => {
      const id = randomUUID();
      ids.push(id);
      return { id, topic, body: Buffer.from(`{"n":${i + k}}`), headers: {}, priority: 4 };
    });
    await t.publish(batch);
  }
  return ids;
}

/**
 * Publishes `messages`, then runs a consumer child process that is SIGKILLed `kills` times at
 * random points and restarted; finally consumes what is left in this process and checks that
 * nothing stays leased or queued. Every published message must be processed at least once.
 */
export async function crashSoak(options: CrashSoakOptions): Promise<CrashSoakResult> {
  const n = options.messages ?? 10_000;
  const kills = options.kills ?? 10;
  const ackTimeoutMs = options.ackTimeoutMs ?? 1_000;
  const prefetch = options.prefetch ?? 32;
  const random = options.random ?? Math.random;
  const log = options.log ?? (() => {});
  const prefix = `soak${randomUUID().replaceAll('-', '').slice(0, 10)}`;
  const topic = `${prefix}.work`;
  const group = `${prefix}-workers`;

  const t = await options.open();
  await t.connect();
  try {
    // Declare the group durably before publishing.
    await (await t.subscribe(topic, { group, prefetch: 1, ackTimeoutMs })).close();
    const ids = await publishNumbered(t, topic, n);
    log(`published ${n}`);

    const counts = new Map<string, number>();
    const killPoints: number[] = [];
    const record = (id: string) => counts.set(id, (counts.get(id) ?? 0) + 1);
    const share = Math.max(1, Math.floor(n / (kills + 2)));
    for (let k = 0; k < kills; k++) {
      const child = startConsumerChild({
        module: options.childModule,
        arg: options.childArg,
        pattern: topic,
        group,
        ackTimeoutMs,
        prefetch,
        mode: 'ack',
      });
      // Kill after a random number of deliveries in this run: anywhere from the first message
      // to about two shares, so kills land early, late, mid-batch and mid-ack.
      const target = 1 + Math.floor(random() * 2 * share);
      let seen = 0;
      try {
        await until(
          () => {
            seen = child.lines.filter((l) => l.id).length;
            return seen >= target || counts.size + seen >= n;
          },
          60_000,
          `child ${k} to process ${target} messages`,
        );
      } catch (err) {
        const ready = child.lines.some((l) => l.ready);
        const code = child.process.exitCode ?? child.process.signalCode;
        throw new Error(
          `${(err as Error).message}: it ${ready ? 'was ready' : 'never became ready'}, processed ${seen}, ` +
            `exit ${code ?? 'none (still running)'}; distinct so far ${counts.size}; stderr: ${child.stderr().slice(-2_000) || '(empty)'}`,
        );
      } finally {
        await child.kill();
      }
      for (const l of child.lines) if (l.id) record(l.id);
      killPoints.push(child.lines.filter((l) => l.id).length);
      log(`kill ${k + 1}: child processed ${killPoints.at(-1)}; distinct so far ${counts.size}`);
    }

    // Finish in-process: leases of killed children expire and come back here.
    const r = new Reader(await t.subscribe(topic, { group, prefetch, ackTimeoutMs }));
    const drainStart = Date.now();
    const deadline = drainStart + 120_000 + ackTimeoutMs;
    while (counts.size < n) {
      const d = await r.take(Math.max(1, deadline - Date.now()));
      if (!d) {
        // What became of the rest: still queued or leased (groupStats), dead-lettered, or gone.
        const stats = await t.groupStats?.(group).catch((err: unknown) => String(err));
        const dead = await t.deadLetters.list({ group, limit: n }).catch(() => []);
        throw new Error(
          `only ${counts.size} of ${n} messages were processed; group stats ${JSON.stringify(stats)}, ` +
            `${dead.length} dead letters (${[...new Set(dead.map((x) => x.reason))].join(', ')}); ` +
            `kill points ${JSON.stringify(killPoints)}; after ${Date.now() - drainStart} ms of draining, ` +
            `the subscription ${r.subscription.closed ? 'closed' : 'open'}`,
        );
      }
      record(d.message.id);
      await d.ack();
    }
    // Nothing may remain queued or leased: drain redeliveries of in-flight work until quiet.
    for (;;) {
      const d = await r.take(ackTimeoutMs * 2);
      if (!d) break;
      record(d.message.id);
      await d.ack();
    }
    await r.close();
    const deadLetters = (await t.deadLetters.list({ group, limit: n })).length;
    const missing = ids.filter((id) => !counts.has(id)).length;
    if (missing) throw new Error(`${missing} messages lost`);
    let redeliveries = 0;
    for (const c of counts.values()) redeliveries += c - 1;
    return { published: n, processed: counts.size, redeliveries, kills, killPoints, deadLetters };
  } finally {
    await t.close();
  }
}
