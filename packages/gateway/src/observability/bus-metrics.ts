import { performance } from 'node:perf_hooks';
import { type ConsumeContext, HANDLED_SYNC, type Middleware, type Next, type PublishContext } from '@agentbus/core';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { BoundedLabels } from './bounded-labels.js';
import { type MetricsOptions, resolveMetricsOptions } from './metrics-options.js';
import { settlementOutcome } from './settlement-outcome.js';

/**
 * The bus's message metrics in one prom-client registry, fed by {@link BusMetrics.middleware}:
 *
 * - `agentbus_messages_published_total{topic}` — publishes the transport confirmed
 * - `agentbus_messages_delivered_total{group}` — deliveries handed to the handler chain
 * - `agentbus_messages_redelivered_total{group}` — of those, attempt > 1
 * - `agentbus_messages_acked_total{group}`, `…_nacked_total{group}`,
 *   `…_dead_lettered_total{group,reason}` — how they were settled
 * - `agentbus_handler_duration_seconds{group}` — histogram, hook to settle
 * - `agentbus_in_flight{group}` — handlers running now
 *
 * Topic and group labels keep at most `maxLabelValues` distinct values each (then `other`).
 */
export class BusMetrics {
  readonly #published: Counter<'topic'>;
  readonly #delivered: Counter<'group'>;
  readonly #redelivered: Counter<'group'>;
  readonly #acked: Counter<'group'>;
  readonly #nacked: Counter<'group'>;
  readonly #deadLettered: Counter<'group' | 'reason'>;
  readonly #duration: Histogram<'group'>;
  readonly #inFlight: Gauge<'group'>;
  readonly #topics: BoundedLabels;
  readonly #groups: BoundedLabels;
  readonly #reasons: BoundedLabels;

  constructor(registry: Registry, options: MetricsOptions = {}) {
    const o = resolveMetricsOptions(options);
    const registers = [registry];
    this.#topics = new BoundedLabels(o.maxLabelValues);
    this.#groups = new BoundedLabels(o.maxLabelValues);
    this.#reasons = new BoundedLabels(100);
    this.#published = new Counter({
      name: 'agentbus_messages_published_total',
      help: 'Messages published and confirmed durable by the transport.',
      labelNames: ['topic'],
      registers,
    });
    this.#delivered = new Counter({
      name: 'agentbus_messages_delivered_total',
      help: 'Deliveries handed to handlers (each attempt counts).',
      labelNames: ['group'],
      registers,
    });
    this.#redelivered = new Counter({
      name: 'agentbus_messages_redelivered_total',
      help: 'Deliveries of a message already delivered before (attempt > 1).',
      labelNames: ['group'],
      registers,
    });
    this.#acked = new Counter({
      name: 'agentbus_messages_acked_total',
      help: 'Deliveries acknowledged.',
      labelNames: ['group'],
      registers,
    });
    this.#nacked = new Counter({
      name: 'agentbus_messages_nacked_total',
      help: 'Deliveries put back for a retry.',
      labelNames: ['group'],
      registers,
    });
    this.#deadLettered = new Counter({
      name: 'agentbus_messages_dead_lettered_total',
      help: 'Deliveries dead-lettered by their handler or its failure, by reason.',
      labelNames: ['group', 'reason'],
      registers,
    });
    this.#duration = new Histogram({
      name: 'agentbus_handler_duration_seconds',
      help: 'Time from a delivery entering the handler chain until it finished.',
      labelNames: ['group'],
      buckets: [...o.handlerDurationBuckets],
      registers,
    });
    this.#inFlight = new Gauge({
      name: 'agentbus_in_flight',
      help: 'Handlers running now.',
      labelNames: ['group'],
      registers,
    });
  }

  /** The bus middleware that feeds these metrics; add it once per bus and registry. */
  middleware(): Middleware {
    return {
      name: 'metrics',
      publish: (ctx: PublishContext, next: Next) => {
        const topic = this.#topics.value(ctx.envelope.topic);
        return next().then(() => this.#published.inc({ topic }));
      },
      consume: (ctx: ConsumeContext, next: Next) => {
        const group = this.#groups.value(ctx.group);
        const labels = { group };
        this.#delivered.inc(labels);
        if (ctx.delivery.attempt > 1) this.#redelivered.inc(labels);
        this.#inFlight.inc(labels);
        const startMs = performance.now();
        const done = next();
        if (done === HANDLED_SYNC) {
          this.#finish(ctx, labels, startMs, false, undefined);
          return done;
        }
        return done.then(
          () => this.#finish(ctx, labels, startMs, false, undefined),
          (err: unknown) => {
            this.#finish(ctx, labels, startMs, true, err);
            throw err;
          },
        );
      },
    };
  }

  #finish(ctx: ConsumeContext, labels: { group: string }, startMs: number, failed: boolean, err: unknown): void {
    this.#inFlight.dec(labels);
    this.#duration.observe(labels, (performance.now() - startMs) / 1000);
    const outcome = settlementOutcome(ctx, failed, err);
    switch (outcome.settlement) {
      case 'ack':
        this.#acked.inc(labels);
        break;
      case 'nack':
        this.#nacked.inc(labels);
        break;
      case 'dead-letter':
        this.#deadLettered.inc({ group: labels.group, reason: this.#reasons.value(outcome.reason ?? 'handler') });
        break;
      default:
        break;
    }
  }
}
