import { type AmqpQueueType, amqpTransport } from '@agentbus/amqp';
import { until } from '@agentbus/conformance';
import { BusError, createBus, describeError, silentLogger } from '@agentbus/core';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ThrowawayRabbit } from './broker.js';

// A node of our own: stopping the application of the shared broker would break every other test
// (and every other user) of it.
const rabbit = new ThrowawayRabbit();
let skipReason: string | undefined;

beforeAll(async () => {
  try {
    await rabbit.start();
    console.log(`throwaway RabbitMQ node ${rabbit.node} on port ${rabbit.port} booted in ${rabbit.bootMs} ms`);
  } catch (err) {
    await rabbit.stop();
    const reason = `could not start a throwaway RabbitMQ node: ${describeError(err)}`;
    if (process.env.CI) throw new Error(`${reason}\nCI is set, so this test fails instead of skipping`);
    console.warn(`\n*** SKIPPING the RabbitMQ restart test: ${reason} ***\n`);
    skipReason = reason;
  }
}, 90_000);

afterAll(() => rabbit.stop(), 30_000);

/** Publish loops running at once, like the agents of a real deployment. */
const PUBLISHERS = 4;

type Phase = 'before' | 'outage' | 'after';

/** One publish: when it started, how it ended. */
interface Attempt {
  readonly n: number;
  /** The phase it started in. */
  readonly phase: Phase;
  readonly startedAt: number;
  settledAt?: number;
  /** The envelope id, once the publish resolved. */
  id?: string;
  err?: unknown;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? 0;
}

/** `until`, with a description computed when it times out (the state then, not at the start). */
async function waitFor(what: string, condition: () => boolean, timeoutMs: number, state: () => string) {
  try {
    await until(condition, timeoutMs, what);
  } catch (err) {
    throw new Error(`${err instanceof Error ? err.message : String(err)}\n${state()}`);
  }
}

async function restartScenario(queueType: AmqpQueueType): Promise<void> {
  const transport = amqpTransport({
    url: rabbit.url,
    namespace: `restart-${queueType}`,
    queueType,
    heartbeatS: 5,
    reconnect: { initialMs: 100, maxMs: 1_000 },
  });
  const bus = createBus({ transport, logger: silentLogger });

  const attempts: Attempt[] = [];
  /** Times each envelope id was handled (more than once: redelivered after its ack was lost). */
  const handledIds = new Map<string, number>();
  /** When each message number was first handled. */
  const handledAt = new Map<number, number>();
  // Closed just before the outage: handlers hold their deliveries, so a backlog of confirmed
  // messages is waiting in the broker when it stops, and the held deliveries finish while it is
  // down (their acks cannot reach it).
  let gate: Promise<void> | undefined;
  let openGate = () => {};

  await bus.subscribe<{ n: number }>(
    'jobs.run',
    async (d) => {
      if (gate) await gate;
      handledIds.set(d.envelope.id, (handledIds.get(d.envelope.id) ?? 0) + 1);
      if (!handledAt.has(d.data.n)) handledAt.set(d.data.n, Date.now());
    },
    { group: 'workers', concurrency: 4, ackTimeoutMs: 5_000 },
  );

  let phase: Phase = 'before';
  let publishing = true;
  const publishLoop = async () => {
    while (publishing) {
      const a: Attempt = { n: attempts.length, phase, startedAt: performance.now() };
      attempts.push(a);
      try {
        a.id = (await bus.publish('jobs.run', { n: a.n })).id;
      } catch (err) {
        // Refused: not acknowledged, so no promise to keep; what matters is how it was refused.
        a.err = err;
      }
      a.settledAt = performance.now();
      await sleep(2);
    }
  };
  const publisher = Promise.all(Array.from({ length: PUBLISHERS }, publishLoop));

  const resolved = () => attempts.filter((a) => a.id !== undefined);
  const rejected = (p?: Phase) => attempts.filter((a) => a.err !== undefined && (p === undefined || a.phase === p));
  const unhandled = () => resolved().filter((a) => !handledAt.has(a.n));
  const state = () =>
    `phase ${phase}: published ${attempts.length}, resolved ${resolved().length}, rejected ${rejected().length}, ` +
    `pending ${attempts.filter((a) => a.settledAt === undefined).length}, handled ${handledAt.size}; ` +
    `resolved but never handled: ${unhandled()
      .slice(0, 20)
      .map((a) => a.n)
      .join(', ')}`;

  try {
    await waitFor('consumption before the outage', () => handledAt.size >= 100, 15_000, state);
    gate = new Promise((r) => {
      openGate = r;
    });
    await waitFor('a backlog before the outage', () => unhandled().length >= 100, 15_000, state);

    phase = 'outage';
    const outageAt = Date.now();
    await rabbit.stopApp();
    const backlog = unhandled().map((a) => a.n);
    gate = undefined;
    openGate();
    // The outage lasts until the publishers have been refused many times over (the circuit stays
    // open across several reconnect attempts), not for a fixed time.
    await waitFor('publishes to fail while the broker is down', () => rejected('outage').length >= 500, 10_000, state);
    await rabbit.startApp();
    phase = 'after';
    const outageMs = Date.now() - outageAt;
    const recoveredAt = Date.now();

    // The same subscription, never re-created, must consume again by itself.
    const handledAfter = () => attempts.filter((a) => a.phase === 'after' && handledAt.has(a.n));
    await waitFor(
      'consumption of messages published after the restart',
      () => handledAfter().length >= 100,
      30_000,
      state,
    );
    const recoveryMs = Date.now() - recoveredAt;
    publishing = false;
    await publisher;
    await waitFor('every resolved publish to be handled', () => unhandled().length === 0, 30_000, state);

    const ms = (a: Attempt) => (a.settledAt ?? Number.NaN) - a.startedAt;
    const resolvedAfter = resolved().filter((a) => a.phase === 'after');
    const errorClasses: Record<string, number> = {};
    for (const a of rejected()) {
      const name = a.err instanceof Error ? a.err.constructor.name : typeof a.err;
      errorClasses[name] = (errorClasses[name] ?? 0) + 1;
    }
    console.log(
      `amqp ${queueType} broker restart: ${JSON.stringify({
        published: attempts.length,
        resolved: resolved().length,
        rejected: rejected().length,
        rejectedByPhase: {
          before: rejected('before').length,
          outage: rejected('outage').length,
          after: rejected('after').length,
        },
        errorClasses,
        resolvedAfterRestart: resolvedAfter.length,
        handled: handledAt.size,
        handledMoreThanOnce: [...handledIds.values()].filter((c) => c > 1).length,
        backlogAtStop: backlog.length,
        outageMs,
        firstHandledAfterRestartMs: Math.min(...handledAfter().map((a) => handledAt.get(a.n) ?? 0)) - recoveredAt,
        recoveryTo100HandledMs: recoveryMs,
        resolveMedianMs: Math.round(median(resolved().map(ms))),
        rejectMedianMs: Math.round(median(rejected().map(ms))),
        rejectMaxMs: Math.round(Math.max(0, ...rejected().map(ms))),
      })}`,
    );

    // Every refused publish was refused with the retryable connection error, nothing else.
    const wrong = rejected().filter(
      (a) => !(a.err instanceof BusError && a.err.code === 'CONNECTION' && a.err.retryable),
    );
    expect(
      wrong.map((a) => `#${a.n} (${a.phase}, ${Math.round(ms(a))} ms): ${describeError(a.err)}`),
      'publishes refused with something other than a retryable ConnectionError',
    ).toEqual([]);
    // The outage was seen, and refused fast: the circuit is open, nobody waits for a timeout.
    expect(rejected('outage').length).toBeGreaterThanOrEqual(20);
    expect(median(rejected('outage').map(ms))).toBeLessThan(250);
    // Messages confirmed before the stop and still in the broker came back with it.
    expect(backlog.length).toBeGreaterThanOrEqual(100);
    for (const n of backlog) expect(handledAt.has(n), `backlog message ${n} handled`).toBe(true);
    // Publishing works again after the restart, and nothing that resolved was dropped.
    expect(resolvedAfter.length).toBeGreaterThanOrEqual(100);
    for (const a of resolved()) expect(handledIds.has(a.id ?? ''), `message ${a.n} (${a.id}) handled`).toBe(true);
  } finally {
    publishing = false;
    openGate();
    await publisher;
    await bus.close();
  }
}

it('a quorum-queue consumer recovers by itself across a broker restart, and every confirmed publish is handled', async (ctx) => {
  if (skipReason) ctx.skip(skipReason);
  await restartScenario('quorum');
}, 60_000);

it('a classic-queue consumer recovers by itself across a broker restart, and every confirmed publish is handled', async (ctx) => {
  if (skipReason) ctx.skip(skipReason);
  await restartScenario('classic');
}, 60_000);
