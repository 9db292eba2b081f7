import { statSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import {
  assertPattern,
  assertTopic,
  ClosedError,
  ConfigError,
  type GroupStats,
  type HealthReport,
  type ManagedDelivery,
  PollingSubscription,
  type Subscription,
  type Transport,
  type TransportCapabilities,
  type TransportMessage,
  type TransportSubscribeOptions,
} from '@agentbus/core';
import { toBusError } from './db-errors.js';
import { type ResolvedSqliteOptions, resolveSqliteOptions, type SqliteTransportOptions } from './options.js';
import { RetentionSweeper } from './retention-sweeper.js';
import { openDatabase } from './schema.js';
import { type ClaimContext, SqliteClaimSource } from './sqlite-claim-source.js';
import { SqliteDeadLetterStore } from './sqlite-dead-letter-store.js';
import { SqliteGroups } from './sqlite-groups.js';
import { SqliteStore, toMessageRow } from './sqlite-store.js';
import { WriteQueue } from './write-queue.js';

/** Sweep steps per interval in the background (each deletes ≤ 2,000 rows or scans ≤ 5,000). */
const BACKGROUND_STEPS = 8;

const CAPABILITIES: TransportCapabilities = Object.freeze({
  persistent: true,
  crossProcess: true,
  priority: true,
  delayedDelivery: true,
  ttl: true,
  wildcards: true,
  deadLetterReplay: true,
});

/** The open database and what hangs off it; created on first use. */
interface Connection {
  readonly store: SqliteStore;
  readonly groups: SqliteGroups;
  readonly queue: WriteQueue;
  readonly sweeper: RetentionSweeper;
  readonly timer: NodeJS.Timeout | undefined;
}

function positiveInt(value: number, path: string): void {
  if (!Number.isInteger(value) || value < 1)
    throw new ConfigError(`must be a positive integer, got ${value}`, { path });
}

/**
 * The embedded durable transport: one SQLite file in WAL mode holds messages, per-group delivery
 * rows, leases and dead letters, with the same semantics as MemoryTransport. Several processes
 * may share the file: every write is an IMMEDIATE transaction, routing reads the groups table
 * inside the publishing transaction, and idle consumers poll every `pollIntervalMs` (publishes in
 * this process wake them at once).
 */
export class SqliteTransport implements Transport {
  readonly name = 'sqlite';
  readonly capabilities: TransportCapabilities;
  readonly deadLetters: SqliteDeadLetterStore;
  readonly #options: ResolvedSqliteOptions;
  readonly #subscriptions = new Set<PollingSubscription>();
  #connection: Connection | undefined;
  #closing: Promise<void> | undefined;
  #lastSweepError: unknown;
  #sweeping = false;

  /** Validates options (ConfigError); the database is opened on first use or by `connect()`. */
  constructor(options: SqliteTransportOptions) {
    this.#options = resolveSqliteOptions(options);
    // A private in-memory database lives and dies with this instance.
    this.capabilities =
      this.#options.path === ':memory:'
        ? Object.freeze({ ...CAPABILITIES, persistent: false, crossProcess: false })
        : CAPABILITIES;
    this.deadLetters = new SqliteDeadLetterStore({
      clock: this.#options.clock,
      store: () => this.#connect().store,
      onReplayed: () => this.#wakeAll(),
    });
  }

  /** The database file. */
  get path(): string {
    return this.#options.path;
  }

  get closed(): boolean {
    return this.#closing !== undefined;
  }

  /** Opens the database and creates the schema; idempotent. */
  async connect(): Promise<void> {
    this.#connect();
  }

  /**
   * Resolves once the batch is committed, fanned out to every group declared so far. Publishes
   * made in the same event-loop turn share one commit.
   */
  async publish(batch: readonly TransportMessage[]): Promise<void> {
    const { queue, store } = this.#connect();
    if (batch.length === 0) return;
    // Converted up front, so that a malformed message fails its own call rather than the shared commit.
    const rows = batch.map(toMessageRow);
    await queue.enqueue((now) => store.publish(rows, now) > 0);
  }

  /**
   * Declares `group` durably for `pattern` (it receives messages published from now on, also
   * while no consumer runs) and starts consuming its delivery rows.
   *
   * With `ephemeral`, the group is this subscription's alone: it renews the group every third of
   * `ephemeralTtlMs`, and on close deletes the group with its delivery rows and dead letters.
   * Should the process die, the group expires after `ephemeralTtlMs` (no routes from then on) and
   * the next sweep of any process with the file open deletes it. A group is either durable or
   * ephemeral, and an ephemeral one has one subscriber: otherwise ConfigError.
   */
  async subscribe(pattern: string, options: TransportSubscribeOptions): Promise<Subscription<ManagedDelivery>> {
    const connection = this.#connect();
    assertPattern(pattern);
    if (typeof options?.group !== 'string' || options.group === '') {
      throw new ConfigError('must be a non-empty string', { path: 'subscribe.group' });
    }
    positiveInt(options.prefetch, 'subscribe.prefetch');
    positiveInt(options.ackTimeoutMs, 'subscribe.ackTimeoutMs');
    const { group } = options;
    const ephemeral = options.ephemeral === true;
    const ttlMs = this.#options.ephemeralTtlMs;
    try {
      const now = this.#options.clock.now();
      connection.groups.declare(group, pattern, now, ephemeral ? now + ttlMs : undefined);
    } catch (err) {
      throw toBusError(err, 'subscribe');
    }
    let renewer: NodeJS.Timeout | undefined;
    if (ephemeral) {
      renewer = setInterval(
        () => {
          connection.queue
            .enqueue((now) => {
              connection.groups.renew(group, pattern, now, now + ttlMs);
              return false;
            })
            .catch(() => {}); // the next renewal tries again; the group lasts ephemeralTtlMs
        },
        Math.max(1, Math.floor(ttlMs / 3)),
      );
      renewer.unref();
    }
    const source = new SqliteClaimSource(this.#claimContext(connection), group, options.ackTimeoutMs, () => {
      this.#subscriptions.delete(sub);
      if (!renewer) return;
      clearInterval(renewer);
      try {
        connection.groups.remove(group);
      } catch {
        // Left to the sweep, which removes it once ephemeralTtlMs has passed.
      }
    });
    const sub: PollingSubscription = new PollingSubscription(source, {
      prefetch: options.prefetch,
      pollIntervalMs: this.#options.pollIntervalMs,
      leaseMs: options.ackTimeoutMs,
    });
    this.#subscriptions.add(sub);
    return sub;
  }

  /** The live groups whose patterns match `topic` (an ephemeral group past its deadline does not count). */
  async routeCount(topic: string): Promise<number> {
    const { groups } = this.#connect();
    assertTopic(topic);
    try {
      return groups.routeCount(topic, this.#options.clock.now());
    } catch (err) {
      throw toBusError(err, 'routeCount');
    }
  }

  /**
   * Counts of the group's delivery rows: backlog = ready, delayed by a nack, or leased with the
   * lease run out; inFlight = leased to a consumer (of any process). Zeros for an unknown group.
   */
  async groupStats(group: string): Promise<GroupStats> {
    const { groups } = this.#connect();
    try {
      return groups.stats(group, this.#options.clock.now());
    } catch (err) {
      throw toBusError(err, 'groupStats');
    }
  }

  /**
   * `pass` while open; `deep` also times a write + read round trip. Details: path, backlog
   * (rows claimable now), inflight (leased), delayed, deadLetters, messages, walSizeBytes.
   */
  async health(deep = false): Promise<HealthReport> {
    if (this.closed) return { status: 'fail', transport: this.name, error: 'closed' };
    try {
      const { store } = this.#connect();
      const now = this.#options.clock.now();
      let latencyMs: number | undefined;
      if (deep) {
        const started = performance.now();
        store.db.prepare('INSERT OR REPLACE INTO health (id, checked_at) VALUES (1, ?)').run(now);
        store.db.prepare('SELECT checked_at FROM health WHERE id = 1').get();
        latencyMs = performance.now() - started;
      }
      const count = (table: string) => store.db.prepare(`SELECT count(*) FROM ${table}`).pluck().get() as number;
      const details: Record<string, unknown> = {
        path: this.path,
        ...store.stats(now),
        deadLetters: count('dead_letters'),
        messages: count('messages'),
        subscriptions: this.#subscriptions.size,
      };
      const wal = this.#walSizeBytes();
      if (wal !== undefined) details.walSizeBytes = wal;
      const sweepError = this.#lastSweepError;
      if (sweepError !== undefined) details.lastSweepError = String((sweepError as Error)?.message ?? sweepError);
      return {
        status: sweepError === undefined ? 'pass' : 'warn',
        transport: this.name,
        ...(latencyMs === undefined ? {} : { latencyMs }),
        details,
      };
    } catch (err) {
      return { status: 'fail', transport: this.name, error: toBusError(err, 'health check').message };
    }
  }

  /**
   * Removes expired ephemeral groups and deletes settled messages that retention no longer keeps
   * (also run every `sweepIntervalMs`). Resolves with the number of messages deleted.
   */
  async sweep(): Promise<number> {
    const { sweeper, groups } = this.#connect();
    try {
      groups.sweep(this.#options.clock.now());
      return sweeper.sweep(this.#options.clock.now());
    } catch (err) {
      throw toBusError(err, 'sweep');
    }
  }

  /**
   * Idempotent: closes the subscriptions (their unsettled deliveries are released for
   * redelivery), commits pending settles, stops the sweep and closes the database.
   */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    await Promise.all([...this.#subscriptions].map((s) => s.close()));
    const connection = this.#connection;
    if (!connection) return;
    if (connection.timer) clearInterval(connection.timer);
    connection.queue.close();
    connection.store.close();
  }

  #connect(): Connection {
    if (this.#closing) throw new ClosedError('transport is closed');
    if (this.#connection) return this.#connection;
    let store: SqliteStore;
    try {
      const db = openDatabase(this.#options);
      // With retention 0 a message no group receives would be deleted by the next sweep anyway.
      const keepUnrouted = this.#options.retention.maxAgeMs > 0;
      store = new SqliteStore(db, { ids: this.#options.ids, keepUnrouted });
    } catch (err) {
      throw toBusError(err, `open ${this.path}`);
    }
    const queue = new WriteQueue(store, this.#options.clock, () => this.#wakeAll());
    const sweeper = new RetentionSweeper(store, this.#options.retention);
    const groups = new SqliteGroups(store);
    let timer: NodeJS.Timeout | undefined;
    if (this.#options.sweepIntervalMs > 0) {
      timer = setInterval(() => this.#sweepInBackground(sweeper, groups), this.#options.sweepIntervalMs);
      // Retention must never keep a process alive.
      timer.unref();
    }
    this.#connection = { store, groups, queue, sweeper, timer };
    return this.#connection;
  }

  /**
   * One bounded step per event-loop turn, so that consumers keep running meanwhile, and at most
   * BACKGROUND_STEPS per interval: with a large backlog a whole pass would scan every live message
   * each interval. The sweeper keeps its place, so the next interval goes on from there.
   */
  #sweepInBackground(sweeper: RetentionSweeper, groups: SqliteGroups): void {
    if (this.#sweeping) return;
    this.#sweeping = true;
    try {
      groups.sweep(this.#options.clock.now());
    } catch (err) {
      this.#lastSweepError = err; // usually SQLITE_BUSY: the next interval tries again
      this.#sweeping = false;
      return;
    }
    let steps = 0;
    const step = () => {
      try {
        if (!this.closed && sweeper.step(this.#options.clock.now()).more && ++steps < BACKGROUND_STEPS) {
          setImmediate(step);
          return;
        }
        this.#lastSweepError = undefined;
      } catch (err) {
        // Usually SQLITE_BUSY: the next interval tries again. Kept for health() meanwhile.
        this.#lastSweepError = err;
      }
      this.#sweeping = false;
    };
    step();
  }

  #claimContext(connection: Connection): ClaimContext {
    const transport = this;
    return {
      store: connection.store,
      queue: connection.queue,
      ids: this.#options.ids,
      clock: this.#options.clock,
      get closed() {
        return transport.closed;
      },
      wake: () => this.#wakeAll(),
    };
  }

  /** Cheap: a woken subscription with nothing to do only runs a read-only check. */
  #wakeAll(): void {
    for (const s of this.#subscriptions) s.wake();
  }

  #walSizeBytes(): number | undefined {
    if (this.path === ':memory:') return undefined;
    try {
      return statSync(`${this.path}-wal`).size;
    } catch {
      return undefined;
    }
  }
}

/** Creates the SQLite transport; see {@link SqliteTransportOptions}. */
export function sqliteTransport(options: SqliteTransportOptions): SqliteTransport {
  return new SqliteTransport(options);
}
