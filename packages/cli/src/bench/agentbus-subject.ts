import type { Bus, BusSubscription, PublishItem } from '@agentbus/core';
import { type BenchChannel, type BenchSubject, type Consumers, padding } from './bench-subject.js';

interface Payload {
  readonly t: number;
  readonly pad: string;
}

/** How the agentbus side of the benchmark publishes and consumes. */
export interface AgentbusSubjectOptions {
  /** Handlers per consumer subscription. */
  readonly concurrency: number;
  /** Deliveries each consumer leases ahead. */
  readonly prefetch: number;
  /** Tells the runs of one process (and of one database file) apart. */
  readonly runId: string;
  readonly size: number;
}

/** agentbus end to end: envelopes, codec, middleware chain, transport, handler, ack. */
export class AgentbusSubject implements BenchSubject {
  readonly label = 'agentbus';
  readonly #pad: string;

  constructor(
    private readonly bus: Bus,
    private readonly options: AgentbusSubjectOptions,
  ) {
    this.#pad = padding(options.size);
  }

  async channel(name: string): Promise<BenchChannel> {
    const { bus } = this;
    const topic = `bench.${this.options.runId}.${name}`;
    const group = `bench-${this.options.runId}-${name}`;
    // Subscribing declares the group, so messages published before any consumer runs are kept.
    await (await bus.subscribe(topic, () => {}, { group })).close();
    const pad = this.#pad;
    const { concurrency, prefetch } = this.options;
    return {
      async publishBatch(count) {
        const data: Payload = { t: performance.now(), pad };
        const items: PublishItem<Payload>[] = new Array(count);
        for (let i = 0; i < count; i++) items[i] = { topic, data };
        await bus.publishBatch(items);
      },
      async publishOne(sentAtMs) {
        await bus.publish<Payload>(topic, { t: sentAtMs, pad });
      },
      async consume(consumers, onMessage): Promise<Consumers> {
        const subs: BusSubscription[] = [];
        for (let i = 0; i < consumers; i++) {
          subs.push(await bus.subscribe<Payload>(topic, (d) => onMessage(d.data.t), { group, concurrency, prefetch }));
        }
        return { stop: async () => void (await Promise.all(subs.map((s) => s.close()))) };
      },
    };
  }

  async close(): Promise<void> {
    await this.bus.close();
  }
}
