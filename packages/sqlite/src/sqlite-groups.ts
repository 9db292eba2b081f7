import { ConfigError, type GroupStats } from '@agentbus/core';
import type { SqliteStore } from './sqlite-store.js';

/**
 * The lifecycle of consumer groups in the `groups` table: durable and ephemeral declarations,
 * removal of an ephemeral group with everything it holds, the sweep of ephemeral groups whose
 * owner stopped renewing them, and the read-only questions `routeCount` and `groupStats` ask.
 *
 * An ephemeral group's rows carry `ephemeral_until` (epoch ms; NULL for a durable group): its
 * subscription moves it forward while it runs, and once it has passed, the group counts as gone
 * (no routes) and the next sweep of any process sharing the file deletes it.
 */
export class SqliteGroups {
  readonly #store: SqliteStore;
  readonly #kindOf;
  readonly #insert;
  readonly #touch;
  readonly #deleteDeliveries;
  readonly #deleteDeadLetters;
  readonly #deleteGroup;
  readonly #expired;
  readonly #routeCount;
  readonly #stats;

  constructor(store: SqliteStore) {
    this.#store = store;
    const db = store.db;
    this.#kindOf = db.prepare<[string], { ephemeral_until: number | null }>(
      'SELECT ephemeral_until FROM groups WHERE group_name = ? LIMIT 1',
    );
    this.#insert = db.prepare<[string, string, number, number | null]>(
      'INSERT OR IGNORE INTO groups (group_name, pattern, declared_at, ephemeral_until) VALUES (?, ?, ?, ?)',
    );
    this.#touch = db.prepare<[number, string]>(
      'UPDATE groups SET ephemeral_until = ? WHERE group_name = ? AND ephemeral_until IS NOT NULL',
    );
    this.#deleteDeliveries = db.prepare<[string]>('DELETE FROM deliveries WHERE group_name = ?');
    this.#deleteDeadLetters = db.prepare<[string]>('DELETE FROM dead_letters WHERE group_name = ?');
    this.#deleteGroup = db.prepare<[string]>('DELETE FROM groups WHERE group_name = ?');
    this.#expired = db
      .prepare<[number], string>(
        'SELECT DISTINCT group_name FROM groups WHERE ephemeral_until IS NOT NULL AND ephemeral_until <= ?',
      )
      .pluck();
    this.#routeCount = db
      .prepare<[string, number], number>(
        `SELECT count(DISTINCT group_name) FROM groups
         WHERE topic_matches(pattern, ?) AND (ephemeral_until IS NULL OR ephemeral_until > ?)`,
      )
      .pluck();
    // A row whose lease ran out (token set, ready_at passed) is claimable again: backlog.
    this.#stats = db.prepare<[number, number, string], GroupStats>(
      `SELECT coalesce(sum(token IS NULL OR ready_at <= ?), 0) AS backlog,
              coalesce(sum(token IS NOT NULL AND ready_at > ?), 0) AS inFlight
       FROM deliveries WHERE group_name = ?`,
    );
  }

  /**
   * Declares `group` for `pattern`: durably (`ephemeralUntil` undefined) or as an ephemeral group
   * held until `ephemeralUntil`. A group is one or the other, and an ephemeral group whose holder
   * still renews it has a subscriber already: both refused with ConfigError. An ephemeral group
   * of the same name that expired is removed first.
   */
  declare(group: string, pattern: string, now: number, ephemeralUntil?: number): void {
    this.#store.immediate(() => {
      const existing = this.#kindOf.get(group);
      const ephemeral = ephemeralUntil !== undefined;
      if (existing) {
        const wasEphemeral = existing.ephemeral_until !== null;
        if (wasEphemeral && (existing.ephemeral_until as number) <= now) {
          this.#remove(group);
        } else if (wasEphemeral !== ephemeral) {
          throw new ConfigError(`group ${group} is ${wasEphemeral ? 'ephemeral' : 'durable'}`, {
            path: 'subscribe.ephemeral',
          });
        } else if (ephemeral) {
          throw new ConfigError(`ephemeral group ${group} already has a subscriber`, { path: 'subscribe.group' });
        }
      }
      this.#insert.run(group, pattern, now, ephemeralUntil ?? null);
    });
  }

  /**
   * Keeps an ephemeral group until `until`. Should the group be gone (its holder stalled past the
   * deadline and a sweep removed it), it is declared again for `pattern` and true returned: what
   * was published meanwhile is not its any more.
   */
  renew(group: string, pattern: string, now: number, until: number): boolean {
    if (this.#touch.run(until, group).changes > 0) return false;
    this.#insert.run(group, pattern, now, until);
    return true;
  }

  /** Deletes an ephemeral group: its patterns, delivery rows and dead letters (one transaction). */
  remove(group: string): void {
    this.#store.immediate(() => {
      const kind = this.#kindOf.get(group);
      if (kind && kind.ephemeral_until !== null) this.#remove(group);
    });
  }

  /** Removes the ephemeral groups whose deadline passed; resolves with how many. */
  sweep(now: number): number {
    return this.#store.immediate(() => {
      const groups = this.#expired.all(now);
      for (const g of groups) this.#remove(g);
      return groups.length;
    });
  }

  /** Live groups with a pattern that matches `topic` (expired ephemeral ones do not count). */
  routeCount(topic: string, now: number): number {
    return this.#routeCount.get(topic, now) ?? 0;
  }

  stats(group: string, now: number): GroupStats {
    return this.#stats.get(now, now, group) ?? { backlog: 0, inFlight: 0 };
  }

  #remove(group: string): void {
    this.#deleteDeliveries.run(group);
    this.#deleteDeadLetters.run(group);
    this.#deleteGroup.run(group);
  }
}
