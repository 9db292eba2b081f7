import type { Bus, BusSubscription, PublishItem, PublishOptions } from '@agentbus/core';
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
  /**
   * Spread the messages of each channel round-robin over this many workflows (`workflowid`
   * `<channel>-<i>`, new per channel so that every phase's group starts each workflow at 1);
   * default none.
   */
  readonly workflows?: number | undefined;
  /** The envelope `type` of every message (default: the topic, as a bus sets it). */
  readonly type?: string | undefined;
  /** Shown in reports; default `agentbus`. */
  readonly label?: string | undefined;
  /** Runs after the bus closed (middleware timers). */
  readonly onClose?: (() => void) | undefined;
}

/** agentbus end to end: envelopes, codec, middleware chain, transport, handler, ack. */
export class AgentbusSubject implements BenchSubject {
  readonly label: string;
  readonly #pad: string;

  constructor(
    private readonly bus: Bus,
    private readonly options: AgentbusSubjectOptions,
  ) {
    this.label = options.label ?? 'agentbus';
    this.#pad = padding(options.size);
  }

  async channel(name: string): Promise<BenchChannel> {
    const { bus } = this;
    const topic = `bench.${this.options.runId}.${name}`;
    const group = `bench-${this.options.runId}-${name}`;
    // Subscribing declares the group, so messages published before any consumer runs are kept.
    await (await bus.subscribe(topic, () => {}, { group })).close();
    const pad = this.#pad;
    const { concurrency, prefetch, workflows, type } = this.options;
    // Made once per channel: the publish loop only picks the next one.
    const typed: PublishOptions = type === undefined ? {} : { type };
    const perWorkflow: PublishOptions[] | undefined =
      workflows === undefined
        ? type === undefined
          ? undefined
          : [Object.freeze(typed)]
        : Array.from({ length: workflows }, (_, i) => Object.freeze({ ...typed, workflowid: `${name}-${i}` }));
    let sent = 0;
    const nextOptions = perWorkflow && (() => perWorkflow[sent++ % perWorkflow.length]);
    return {
      async publishBatch(count) {
        const data: Payload = { t: performance.now(), pad };
        const items: PublishItem<Payload>[] = new Array(count);
        if (nextOptions) for (let i = 0; i < count; i++) items[i] = { topic, data, options: nextOptions() };
        else for (let i = 0; i < count; i++) items[i] = { topic, data };
        await bus.publishBatch(items);
      },
      async publishOne(sentAtMs) {
        await bus.publish<Payload>(topic, { t: sentAtMs, pad }, nextOptions?.());
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
    try {
      await this.bus.close();
    } finally {
      this.options.onClose?.();
    }
  }
}
