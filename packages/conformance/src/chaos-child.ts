/**
 * The consumer of the chaos test (see chaos.ts), run in a child process so it can be SIGKILLed.
 * argv: <fixture module> <arg> <topic> <group> <ackTimeoutMs> <prefetch> <concurrency> <failureRate> <chaos|final>
 * Prints `{"id"}` per effect committed, `{"failed":true}` per random failure, `{"idle":true}` once
 * (in `final` mode) all effects are in and nothing is held.
 */
import { pathToFileURL } from 'node:url';
import { createBus, dedup, idempotencyKey, retryPolicy, sequencing, silentLogger } from '@agentbus/core';
import type { ChaosFixture } from './chaos.js';

const [moduleRef, arg, topic, group, ackTimeoutMs, prefetch, concurrency, failureRate, mode] = process.argv.slice(2);
if (!moduleRef || arg === undefined || !topic || !group || !mode) {
  process.stderr.write(
    'usage: chaos-child <module> <arg> <topic> <group> <ackTimeoutMs> <prefetch> <concurrency> <failureRate> <mode>\n',
  );
  process.exit(2);
}
const url = moduleRef.startsWith('file:') ? moduleRef : pathToFileURL(moduleRef).href;
const fixture = (await import(url)) as ChaosFixture;
const stores = await fixture.createChaosStores(arg);
const bus = createBus({ transport: await fixture.createTransport(arg), logger: silentLogger });
const leaseMs = Number(ackTimeoutMs);
const seq = sequencing({ store: stores.sequence, gapTimeoutMs: 600_000 });
bus.use(retryPolicy());
bus.use(seq);
bus.use(dedup({ store: stores.idempotency, leaseMs, busyDelayMs: Math.ceil(leaseMs / 4) }));
const out = (line: object) => process.stdout.write(`${JSON.stringify(line)}\n`);
const rate = Number(failureRate);
const TTL_MS = 3_600_000;
const sub = await bus.subscribe<{ n: number }>(
  topic,
  async (d) => {
    if (Math.random() < rate) {
      out({ failed: true });
      throw new Error('chaos: the model call failed');
    }
    const env = d.envelope;
    await stores.commit(
      { workflowId: env.workflowid as string, seq: env.sequence as number, messageId: env.id },
      idempotencyKey(group, env),
      TTL_MS,
    );
    out({ id: env.id });
  },
  {
    group,
    ackTimeoutMs: leaseMs,
    prefetch: Number(prefetch),
    concurrency: Number(concurrency),
    maxAttempts: 1_000,
    backoff: { initialDelayMs: 5, maxDelayMs: 100 },
  },
);
out({ ready: true });
if (mode === 'final') {
  // Idle: nothing held for its turn and no handler running, twice in a row.
  let quiet = 0;
  const timer = setInterval(() => {
    quiet = seq.held() === 0 && sub.inFlight === 0 ? quiet + 1 : 0;
    if (quiet === 2) {
      out({ idle: true });
      clearInterval(timer);
    }
  }, 200);
}
