import { type Bus, dedup, type IdempotencyStore } from '@agentbus/core';
import { until } from './wait.js';

/** What {@link dedupScenario} saw. */
export interface DedupScenarioResult {
  /** Side effects per `group:message id`: each must be 1. */
  readonly effects: ReadonlyMap<string, number>;
  /** Deliveries that reached the middleware (at least copies × messages × groups). */
  readonly deliveries: number;
  /** Deliveries the dedup middleware acked without running the handler. */
  readonly suppressed: number;
}

export interface DedupScenarioOptions {
  /** A bus with nothing subscribed yet; the scenario adds its middleware and subscriptions. */
  readonly bus: Bus;
  readonly store: IdempotencyStore;
  /** A topic of the scenario's own. */
  readonly topic: string;
  /** Groups sharing the store; each must process every message once (default two). */
  readonly groups: readonly string[];
  readonly messages?: number;
  /** Deliveries of every message: 1 publish + (copies − 1) identical republishes (default 3). */
  readonly copies?: number;
  readonly timeoutMs?: number;
}

/**
 * The idempotent-consumer scenario every IdempotencyStore runs: each message is delivered
 * `copies` times (the same encoded envelope stored again, as a publisher retry or a redelivery
 * would bring it), to several groups sharing one store, with handlers running concurrently; the
 * handler's side effect must happen exactly once per group and message.
 */
export async function dedupScenario(o: DedupScenarioOptions): Promise<DedupScenarioResult> {
  const { bus, topic, groups } = o;
  const n = o.messages ?? 50;
  const copies = o.copies ?? 3;
  let deliveries = 0;
  let suppressed = 0;
  const effects = new Map<string, number>();
  bus.use({
    name: 'count',
    async consume(ctx, next) {
      deliveries++;
      await next();
      if (ctx.state.get('dedup') === 'duplicate') suppressed++;
    },
  });
  bus.use(dedup({ store: o.store, busyDelayMs: 20 }));
  const subs = [];
  for (const group of groups) {
    subs.push(
      await bus.subscribe(
        topic,
        async (d) => {
          // The side effect, made slow enough that duplicates meet it in flight.
          await new Promise((r) => setTimeout(r, 2));
          const k = `${group}:${d.envelope.id}`;
          effects.set(k, (effects.get(k) ?? 0) + 1);
        },
        { group, concurrency: 8, maxAttempts: 1_000 },
      ),
    );
  }
  const envelopes = [];
  for (let i = 0; i < n; i++) envelopes.push(await bus.publish(topic, { i }));
  // The same envelope bytes again, as a redelivery brings them. The transport-level id differs, so
  // a broker's own publish dedup (JetStream's Nats-Msg-Id) does not drop them first.
  for (let c = 1; c < copies; c++) {
    await bus.transport.publish(
      envelopes.map((e) => ({ id: `${e.id}~copy${c}`, topic, body: bus.codec.encode(e), headers: {}, priority: 4 })),
    );
  }
  const timeoutMs = o.timeoutMs ?? 20_000;
  await until(
    () => effects.size === n * groups.length && suppressed >= (copies - 1) * n * groups.length,
    timeoutMs,
    `every message handled once per group and its copies acked unhandled (effects ${effects.size}/${n * groups.length}, suppressed ${suppressed})`,
  );
  // Every copy is accounted for (run once or acked unhandled): close, letting nothing else start.
  for (const s of subs) await s.close();
  return { effects, deliveries, suppressed };
}
