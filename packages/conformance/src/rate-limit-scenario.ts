import { type Bus, ManualClock, rateLimit } from '@agentbus/core';
import { until } from './wait.js';

/** What {@link rateLimitScenario} saw. */
export interface RateLimitScenarioResult {
  /** What the publish over agent-a's budget rejected with (a RateLimitedError). */
  readonly refused: unknown;
  /** Handled while the limiter's clock stood still: the consume budget (2). */
  readonly handledWhileFrozen: readonly string[];
  /** Everything handled in the end (`agent:n`, sorted). */
  readonly handled: readonly string[];
  /** Handler runs: one per message if no put-back delivery ran it. */
  readonly handlerRuns: number;
  /** Deliveries the consume limiter put back. */
  readonly putBack: number;
}

/**
 * Rate limits on both sides, on a limiter clock that only moves when told to. Publish: agent-a
 * may publish 3 messages; its 4th is refused with RateLimitedError and not sent, agent-b has a
 * budget of its own. Consume: the topic may be handled twice; the other deliveries are put back
 * without running the handler for as long as the clock stands still, and are handled once it
 * moves; the refused message, published again after the refill, is handled too.
 */
export async function rateLimitScenario(bus: Bus, topic: string, group: string): Promise<RateLimitScenarioResult> {
  const clock = new ManualClock();
  let putBack = 0;
  bus.use({
    name: 'count-limited',
    async consume(ctx, next) {
      await next();
      if (ctx.state.get('rl-consume') === 'limited') putBack++;
    },
  });
  bus.use(rateLimit({ name: 'rl-publish', on: 'publish', key: 'agent', capacity: 3, refillPerSecond: 1, clock }));
  // 10 ms per token: put-back deliveries come back quickly, and are limited again while the clock stands still.
  bus.use(rateLimit({ name: 'rl-consume', on: 'consume', key: 'topic', capacity: 2, refillPerSecond: 100, clock }));
  const handled: string[] = [];
  let handlerRuns = 0;
  const sub = await bus.subscribe<{ n: number }>(
    topic,
    (d) => {
      handlerRuns++;
      handled.push(`${d.envelope.source}:${d.data.n}`);
    },
    { group, maxAttempts: 1_000 },
  );
  for (let n = 1; n <= 3; n++) await bus.publish(topic, { n }, { source: 'agent-a' });
  const refused = await bus.publish(topic, { n: 4 }, { source: 'agent-a' }).then(
    () => undefined,
    (err: unknown) => err,
  );
  await bus.publish(topic, { n: 1 }, { source: 'agent-b' });
  await until(
    () => handled.length >= 2 && putBack >= 2,
    20_000,
    `two handled and the others put back (handled ${handled.length}, put back ${putBack})`,
  );
  const handledWhileFrozen = [...handled];
  clock.advance(60_000); // both buckets refill
  await until(() => handled.length >= 4, 20_000, `the put-back deliveries handled (handled ${handled.length})`);
  await bus.publish(topic, { n: 4 }, { source: 'agent-a' });
  clock.advance(60_000);
  await until(() => handled.length >= 5, 20_000, `the republished message handled (handled ${handled.length})`);
  await sub.close();
  return { refused, handledWhileFrozen, handled: [...handled].sort(), handlerRuns, putBack };
}
