import { ConfigError, type GroupStats, type TransportSubscribeOptions, topicMatches } from '@agentbus/core';
import { AckPolicy, DeliverPolicy, type JetStreamManager } from '@nats-io/jetstream';
import { H, type NatsNames } from './names.js';

const nanos = (ms: number) => Math.round(ms * 1_000_000);
const ZERO: GroupStats = Object.freeze({ backlog: 0, inFlight: 0 });

/** What the group helpers need of their transport. */
export interface GroupContext {
  readonly names: NatsNames;
  /** The JetStream manager (connected, streams declared). */
  manager(): Promise<JetStreamManager>;
}

function notFound(err: unknown): boolean {
  const text = err instanceof Error ? err.message : String(err);
  return /not found/i.test(text) || (err as { code?: unknown } | null)?.code === 404;
}

/**
 * Ephemeral groups, routeCount and groupStats on JetStream. An ephemeral group is a non-durable
 * pull consumer with `inactive_threshold`: the server deletes it once no pull request of its
 * subscription has come for that long (the process died). Its subscription keeps a pull request
 * waiting at all times, and `max_ack_pending` = prefetch keeps the server from filling it while
 * the subscription holds `prefetch` messages. Closing deletes the consumer, purges the group's
 * dead letters and last-error records; the dead letters of a crashed one (marked
 * `x-ab-dl-ephemeral`) go with the next `sweep`, once its consumer is gone.
 */
export class NatsGroups {
  constructor(private readonly ctx: GroupContext) {}

  /**
   * Creates the ephemeral group's consumer. ConfigError when a consumer of that name exists: a
   * durable group's, or a live ephemeral group's (it has its subscriber).
   */
  async declareEphemeral(
    name: string,
    group: string,
    pattern: string,
    options: TransportSubscribeOptions,
    inactiveMs: number,
  ): Promise<void> {
    const n = this.ctx.names;
    const jsm = await this.ctx.manager();
    const existing = await jsm.consumers.info(n.stream, name).catch(() => undefined);
    if (existing) {
      throw existing.config.durable_name
        ? new ConfigError(`group ${group} is durable`, { path: 'subscribe.ephemeral' })
        : new ConfigError(`ephemeral group ${group} already has a subscriber`, { path: 'subscribe.group' });
    }
    await jsm.consumers.add(n.stream, {
      name,
      description: group,
      filter_subject: n.subject(pattern),
      ack_policy: AckPolicy.Explicit,
      ack_wait: nanos(options.ackTimeoutMs),
      deliver_policy: DeliverPolicy.New,
      max_deliver: -1, // the bus dead-letters past maxAttempts (see the durable consumer)
      max_ack_pending: options.prefetch,
      max_waiting: 4096,
      inactive_threshold: nanos(inactiveMs),
    });
  }

  /** Deletes an ephemeral group's consumer, dead letters and last-error records. */
  async remove(name: string, group: string): Promise<void> {
    const n = this.ctx.names;
    const jsm = await this.ctx.manager();
    await Promise.all([
      jsm.consumers.delete(n.stream, name).catch((err: unknown) => {
        if (!notFound(err)) throw err;
      }),
      jsm.streams.purge(n.deadLetterStream, { filter: n.deadLetterFilter(group) }),
      // The last-error stream exists once some nack carried an error.
      jsm.streams.purge(n.lastErrorStream, { filter: n.lastErrorFilter(name) }).catch(() => {}),
    ]);
  }

  /**
   * Purges the dead letters of ephemeral groups whose consumer is gone (their process died and
   * the server deleted it); resolves with the number of groups purged.
   */
  async sweep(): Promise<number> {
    const n = this.ctx.names;
    const jsm = await this.ctx.manager();
    const info = await jsm.streams.info(n.deadLetterStream, { subjects_filter: n.deadLetterFilter() });
    const bySubject = info.state.subjects ?? {};
    // <ns>.dlq.<group token>.<topic>: one subject per group, to look at.
    const tokens = new Map<string, string>();
    for (const subject of Object.keys(bySubject)) {
      const token = subject.split('.')[2];
      if (token !== undefined && !tokens.has(token)) tokens.set(token, subject);
    }
    if (tokens.size === 0) return 0;
    const live = new Set<string>();
    // A consumer deleted while the server pages through the list comes as null: gone, not live.
    for await (const c of jsm.consumers.list(n.stream)) if (c) live.add(c.name);
    let purged = 0;
    for (const [token, subject] of tokens) {
      if (live.has(token)) continue;
      const m = await jsm.direct.getMessage(n.deadLetterStream, { last_by_subj: subject }).catch(() => null);
      if (m?.header?.get(H.dlEphemeral) !== '1') continue; // a durable group's: kept
      await jsm.streams.purge(n.deadLetterStream, { filter: `${n.namespace}.dlq.${token}.>` });
      purged++;
    }
    return purged;
  }

  /** The consumers (groups) whose filter matches `topic`, ephemeral ones of a dead process until the server deletes them. */
  async routeCount(topic: string): Promise<number> {
    const n = this.ctx.names;
    const jsm = await this.ctx.manager();
    let count = 0;
    for await (const c of jsm.consumers.list(n.stream)) {
      // A consumer deleted while the server pages through the list comes as null: it routes nothing.
      if (!c) continue;
      const filter = c.config.filter_subject;
      if (!filter || topicMatches(n.topicOf(filter), topic)) count++;
    }
    return count;
  }

  /** The consumer's num_pending (backlog) and num_ack_pending (inFlight); zeros without one. */
  async stats(name: string): Promise<GroupStats> {
    const jsm = await this.ctx.manager();
    try {
      const info = await jsm.consumers.info(this.ctx.names.stream, name);
      return { backlog: info.num_pending, inFlight: info.num_ack_pending };
    } catch (err) {
      if (notFound(err)) return ZERO;
      throw err;
    }
  }
}
