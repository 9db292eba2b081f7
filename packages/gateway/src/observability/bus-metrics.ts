import { performance } from 'node:perf_hooks';
import { type ConsumeContext, HANDLED_SYNC, type Middleware, type Next, type PublishContext } from '@agentbus/core';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { BoundedLabels } from './bounded-labels.js';
import { type MetricsOptions, resolveMetricsOptions } from './metrics-options.js';
import { settlementOutcome } from './settlement-outcome.js';

/** The counts of one `group` label value. */
interface GroupCounts {
  delivered: number;
  redelivered: number;
  acked: number;
  nacked: number;
  inFlight: number;
  readonly deadLettered: Map<string, number>;
  /** prom-client's labels object of this group, made once. */
  readonly labels: { readonly group: string };
}

/** Dead-letter reasons kept as distinct label values at most (they come from error codes). */
const MAX_REASONS = 100;

/**
 * The bus's message metrics in one prom-client registry, fed by {@link BusMetrics.middleware}:
 *
 * - `agentbus_messages_published_total{topic}` — publishes the transport confirmed
 * - `agentbus_messages_delivered_total{group}` — deliveries handed to the handler chain
 * - `agentbus_messages_redelivered_total{group}` — of those, attempt > 1
 * - `agentbus_messages_acked_total{group}`, `…_nacked_total{group}`,
 *   `…_dead_lettered_total{group,reason}` — how they were settled (see `settlementOutcome`;
 *   a handler that dead-letters its message itself counts as reason `handler`)
 * - `agentbus_handler_duration_seconds{group}` — histogram, hook to settle
 * - `agentbus_in_flight{group}` — handlers running now
 *
 * Counts are plain numbers on the hot path, handed to prom-client at scrape time. Topic and
 * group labels keep at most `maxLabelValues` distinct values each (then `other`).
 */
export class BusMetrics {
  readonly #topics: BoundedLabels;
  readonly #groups: BoundedLabels;
  readonly #reasons = new BoundedLabels(MAX_REASONS);
  /** Published count by topic label; by raw topic while under the cap (the lookup cache). */
  readonly #published = new Map<string, { n: number }>();
  readonly #publishedByTopic = new Map<string, { n: number }>();
  /** Counts by group label, and the lookup cache by raw group (at most the cap). */
  readonly #counts = new Map<string, GroupCounts>();
  readonly #countsByGroup = new Map<string, GroupCounts>();
  readonly #duration: Histogram<'group'>;

  constructor(registry: Registry, options: MetricsOptions = {}) {
    const o = resolveMetricsOptions(options);
    const registers = [registry];
    this.#topics = new BoundedLabels(o.maxLabelValues);
    this.#groups = new BoundedLabels(o.maxLabelValues);
    const published = this.#published;
    const counts = this.#counts;
    new Counter({
      name: 'agentbus_messages_published_total',
      help: 'Messages published and confirmed durable by the transport.',
      labelNames: ['topic'],
      registers,
      collect() {
        this.reset();
        for (const [topic, c] of published) this.inc({ topic }, c.n);
      },
    });
    const perGroup = (name: string, help: string, field: 'delivered' | 'redelivered' | 'acked' | 'nacked') =>
      new Counter({
        name,
        help,
        labelNames: ['group'],
        registers,
        collect() {
          this.reset();
          for (const c of counts.values()) this.inc(c.labels, c[field]);
        },
      });
    perGroup('agentbus_messages_delivered_total', 'Deliveries handed to handlers (each attempt counts).', 'delivered');
    perGroup(
      'agentbus_messages_redelivered_total',
      'Deliveries of a message already delivered before (attempt > 1).',
      'redelivered',
    );
    perGroup('agentbus_messages_acked_total', 'Deliveries acknowledged.', 'acked');
    perGroup('agentbus_messages_nacked_total', 'Deliveries put back for a retry.', 'nacked');
    new Counter({
      name: 'agentbus_messages_dead_lettered_total',
      help: 'Deliveries dead-lettered by their handler or its failure, by reason.',
      labelNames: ['group', 'reason'],
      registers,
      collect() {
        this.reset();
        for (const c of counts.values())
          for (const [reason, n] of c.deadLettered) this.inc({ group: c.labels.group, reason }, n);
      },
    });
    new Gauge({
      name: 'agentbus_in_flight',
      help: 'Handlers running now.',
      labelNames: ['group'],
      registers,
      collect() {
        this.reset();
        for (const c of counts.values()) this.set(c.labels, c.inFlight);
      },
    });
    this.#duration = new Histogram({
      name: 'agentbus_handler_duration_seconds',
      help: 'Time from a delivery entering the handler chain until it finished.',
      labelNames: ['group'],
      buckets: [...o.handlerDurationBuckets],
      registers,
    });
  }

  /** The bus middleware that feeds these metrics; add it once per bus and registry. */
  middleware(): Middleware {
    return {
      name: 'metrics',
      publish: (ctx: PublishContext, next: Next) => {
        const counter = this.#topicCounter(ctx.envelope.topic);
        return next().then(() => {
          counter.n++;
        });
      },
      consume: (ctx: ConsumeContext, next: Next) => {
        const c = this.#groupCounts(ctx.group);
        c.delivered++;
        if (ctx.delivery.attempt > 1) c.redelivered++;
        c.inFlight++;
        const startMs = performance.now();
        const done = next();
        if (done === HANDLED_SYNC) {
          this.#finish(ctx, c, startMs, false, undefined);
          return done;
        }
        return done.then(
          () => this.#finish(ctx, c, startMs, false, undefined),
          (err: unknown) => {
            this.#finish(ctx, c, startMs, true, err);
            throw err;
          },
        );
      },
    };
  }

  #topicCounter(topic: string): { n: number } {
    let c = this.#publishedByTopic.get(topic);
    if (c !== undefined) return c;
    const label = this.#topics.value(topic);
    c = this.#published.get(label);
    if (c === undefined) {
      c = { n: 0 };
      this.#published.set(label, c);
    }
    if (label === topic) this.#publishedByTopic.set(topic, c);
    return c;
  }

  #groupCounts(group: string): GroupCounts {
    let c = this.#countsByGroup.get(group);
    if (c !== undefined) return c;
    const label = this.#groups.value(group);
    c = this.#counts.get(label);
    if (c === undefined) {
      c = {
        delivered: 0,
        redelivered: 0,
        acked: 0,
        nacked: 0,
        inFlight: 0,
        deadLettered: new Map(),
        labels: Object.freeze({ group: label }),
      };
      this.#counts.set(label, c);
    }
    if (label === group) this.#countsByGroup.set(group, c);
    return c;
  }

  #finish(ctx: ConsumeContext, c: GroupCounts, startMs: number, failed: boolean, err: unknown): void {
    c.inFlight--;
    this.#duration.observe(c.labels, (performance.now() - startMs) / 1000);
    const outcome = settlementOutcome(ctx, failed, err);
    switch (outcome.settlement) {
      case 'ack':
        c.acked++;
        break;
      case 'nack':
        c.nacked++;
        break;
      case 'dead-letter': {
        const reason = this.#reasons.value(outcome.reason ?? 'handler');
        c.deadLettered.set(reason, (c.deadLettered.get(reason) ?? 0) + 1);
        break;
      }
      default:
        break;
    }
  }
}
