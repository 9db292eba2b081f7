import {
  assertPriority,
  assertTopic,
  type IdGenerator,
  type InboundMessage,
  type TransportMessage,
  ValidationError,
} from '@agentbus/core';
import type Database from 'better-sqlite3';

/** Identifies one lease of one delivery row; the token changes with every claim. */
export interface LeaseKey {
  readonly group: string;
  readonly priority: number;
  readonly seq: number;
  readonly token: number;
}

/** One operation of a batch; returns whether it made a delivery row claimable. */
export type BatchOp = (now: number) => boolean;

/** A delivery row leased by {@link SqliteStore.claim}. */
export interface ClaimedRow {
  readonly message: InboundMessage;
  readonly priority: number;
  readonly seq: number;
  /** The attempt this lease counts as (1 on the first delivery). */
  readonly attempt: number;
  /** The error of the nack that made the row ready again, if any. */
  readonly lastError: string | undefined;
}

/** The stored columns of a message, as read back. */
export interface MessageRow {
  readonly id: string;
  readonly topic: string;
  readonly body: Buffer;
  readonly headers: string;
  readonly priority: number;
  readonly expires_at: number | null;
  readonly published_at: number;
}

interface ReadyRow extends MessageRow {
  readonly seq: number;
  readonly attempt: number;
  readonly last_error: string | null;
}

export interface DeliveryStats {
  /** Rows claimable now (including those whose lease ran out). */
  readonly backlog: number;
  /** Rows leased to a consumer. */
  readonly inflight: number;
  /** Rows waiting for a nack delay. */
  readonly delayed: number;
}

/**
 * Headers as stored. A row we did not write could hold anything: rather than fail every claim of
 * its group, deliver it with the raw text under `x-agentbus-unreadable-headers`.
 */
export function parseHeaders(text: string): Record<string, string> {
  try {
    const parsed: unknown = JSON.parse(text);
    if (parsed && typeof parsed === 'object' && !Array.isArray(parsed)) return parsed as Record<string, string>;
  } catch {
    // fall through
  }
  return { 'x-agentbus-unreadable-headers': String(text).slice(0, 1024) };
}

/** Converts a stored message row to what consumers see. */
export function toInbound(row: MessageRow): InboundMessage {
  return {
    id: row.id,
    topic: row.topic,
    body: row.body,
    headers: parseHeaders(row.headers),
    priority: row.priority,
    expiresAtMs: row.expires_at ?? undefined,
    publishedAtMs: row.published_at,
  };
}

/** better-sqlite3 binds Buffers only; wrapping shares the memory instead of copying it. */
function toBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/**
 * The row of a message about to be published (`published_at` is set at commit). Throws
 * ValidationError for a message that must not be stored.
 */
export function toMessageRow(m: TransportMessage): MessageRow {
  assertTopic(m.topic);
  assertPriority(m.priority);
  if (!(m.body instanceof Uint8Array)) throw new ValidationError(`message ${m.id}: body must be a Uint8Array`);
  if (m.expiresAtMs !== undefined && !Number.isFinite(m.expiresAtMs)) {
    throw new ValidationError(`message ${m.id}: expiresAtMs must be a finite number`);
  }
  return {
    id: m.id,
    topic: m.topic,
    body: toBuffer(m.body),
    headers: JSON.stringify(m.headers),
    priority: m.priority,
    expires_at: m.expiresAtMs ?? null,
    published_at: 0,
  };
}

const DEAD_LETTER_COPY = `
  INSERT INTO dead_letters (id, group_name, reason, error, attempts, dead_lettered_at,
                            msg_id, topic, body, headers, priority, expires_at, published_at)
  SELECT ?, d.group_name, ?, ?, d.attempt, ?, m.id, m.topic, m.body, m.headers, m.priority, m.expires_at, m.published_at
  FROM deliveries d CROSS JOIN messages m ON m.seq = d.seq
  WHERE d.group_name = ? AND d.priority = ? AND d.seq = ?`;

const KEY = 'group_name = ? AND priority = ? AND seq = ?';

/**
 * The SQL of the transport, every statement prepared once. Writes (publish, claim, settle) run
 * inside {@link runBatch}: one IMMEDIATE transaction, so that several processes can share the
 * file, for everything the WriteQueue collected in one event-loop turn.
 */
export class SqliteStore {
  readonly db: Database.Database;
  readonly #ids: IdGenerator;
  /** Whether a message no group receives is stored at all (only retention can make it visible). */
  readonly #keepUnrouted: boolean;
  readonly #cached = new Map<string, Database.Statement>();
  /** Topic → matching groups, valid for one transaction only (routes must never be stale). */
  readonly #routes = new Map<string, string[]>();

  readonly #matchGroups;
  readonly #insertMessage;
  readonly #insertDelivery;
  readonly #declareGroup;
  readonly #hasReady;
  readonly #selectReady;
  readonly #lease;
  readonly #ack;
  readonly #nack;
  readonly #extend;
  readonly #release;
  readonly #deleteDelivery;
  readonly #copyLeased;
  readonly #copyAny;
  readonly #stats;
  readonly #batchTx;

  constructor(db: Database.Database, options: { readonly ids: IdGenerator; readonly keepUnrouted: boolean }) {
    this.db = db;
    this.#ids = options.ids;
    this.#keepUnrouted = options.keepUnrouted;
    this.#matchGroups = db
      .prepare<[string], string>('SELECT DISTINCT group_name FROM groups WHERE topic_matches(pattern, ?)')
      .pluck();
    this.#insertMessage = db.prepare<[string, string, Buffer, string, number, number | null, number]>(
      `INSERT INTO messages (id, topic, body, headers, priority, expires_at, published_at)
       VALUES (?, ?, ?, ?, ?, ?, ?)`,
    );
    this.#insertDelivery = db.prepare<[string, number, number, number]>(
      'INSERT INTO deliveries (group_name, priority, seq, attempt, ready_at, token) VALUES (?, ?, ?, 0, ?, NULL)',
    );
    this.#declareGroup = db.prepare<[string, string, number]>(
      'INSERT OR IGNORE INTO groups (group_name, pattern, declared_at) VALUES (?, ?, ?)',
    );
    this.#hasReady = db
      .prepare<[string, number], number>('SELECT 1 FROM deliveries WHERE group_name = ? AND ready_at <= ? LIMIT 1')
      .pluck();
    // CROSS JOIN pins deliveries as the outer loop, so rows come straight off its primary key in claim order.
    this.#selectReady = db.prepare<[string, number, number], ReadyRow>(
      `SELECT d.priority, d.seq, d.attempt, d.last_error, m.id, m.topic, m.body, m.headers, m.expires_at, m.published_at
       FROM deliveries d CROSS JOIN messages m ON m.seq = d.seq
       WHERE d.group_name = ? AND d.ready_at <= ?
       ORDER BY d.priority DESC, d.seq
       LIMIT ?`,
    );
    // The claim clears last_error: should this lease run out, the next delivery has no last error.
    this.#lease = db.prepare<[number, number, number, string, number, number]>(
      `UPDATE deliveries SET attempt = ?, ready_at = ?, token = ?, last_error = NULL WHERE ${KEY}`,
    );
    this.#ack = db.prepare<[string, number, number, number]>(`DELETE FROM deliveries WHERE ${KEY} AND token = ?`);
    this.#nack = db.prepare<[number, string | null, string, number, number, number]>(
      `UPDATE deliveries SET ready_at = ?, token = NULL, last_error = ? WHERE ${KEY} AND token = ?`,
    );
    this.#extend = db.prepare<[number, string, number, number, number]>(
      `UPDATE deliveries SET ready_at = max(ready_at, ?) WHERE ${KEY} AND token = ?`,
    );
    this.#release = db.prepare<[number, number, string | null, string, number, number, number]>(
      `UPDATE deliveries SET ready_at = ?, token = NULL, attempt = attempt - ?, last_error = ? WHERE ${KEY} AND token = ?`,
    );
    this.#deleteDelivery = db.prepare<[string, number, number]>(`DELETE FROM deliveries WHERE ${KEY}`);
    this.#copyLeased = db.prepare<[string, string, string | null, number, string, number, number, number]>(
      `${DEAD_LETTER_COPY} AND d.token = ?`,
    );
    this.#copyAny = db.prepare<[string, string, string | null, number, string, number, number]>(DEAD_LETTER_COPY);
    this.#stats = db.prepare<[number, number, number], DeliveryStats>(
      `SELECT coalesce(sum(ready_at <= ?), 0) AS backlog,
              coalesce(sum(token IS NOT NULL AND ready_at > ?), 0) AS inflight,
              coalesce(sum(token IS NULL AND ready_at > ?), 0) AS delayed
       FROM deliveries`,
    );
    this.#batchTx = db.transaction((ops: readonly BatchOp[], now: number) => {
      this.#routes.clear();
      let changed = false;
      try {
        for (const op of ops) if (op(now)) changed = true;
      } finally {
        this.#routes.clear();
      }
      return changed;
    });
  }

  /** A statement prepared on first use and kept (for the dynamic dead-letter queries). */
  prepareCached<P extends unknown[], R>(sql: string): Database.Statement<P, R> {
    let stmt = this.#cached.get(sql);
    if (!stmt) {
      stmt = this.db.prepare(sql);
      this.#cached.set(sql, stmt);
    }
    return stmt as unknown as Database.Statement<P, R>;
  }

  /** Runs `fn` in an IMMEDIATE transaction: the write lock is taken up front, so it never fails half-way with SQLITE_BUSY. */
  immediate<R>(fn: () => R): R {
    return this.db.transaction(fn).immediate();
  }

  /** Runs `ops` in one IMMEDIATE transaction; true when any of them returned true. */
  runBatch(ops: readonly BatchOp[], now: number): boolean {
    return this.#batchTx.immediate(ops, now);
  }

  /**
   * Stores messages and fans each out to every group whose pattern matches; returns the delivery
   * rows created. Call inside {@link runBatch}.
   */
  publish(batch: readonly MessageRow[], now: number): number {
    // Routes are looked up inside the write transaction, so a group declared by another process counts at once.
    const routes = this.#routes;
    let fanned = 0;
    for (const m of batch) {
      let groups = routes.get(m.topic);
      if (!groups) {
        groups = this.#matchGroups.all(m.topic);
        routes.set(m.topic, groups);
      }
      if (groups.length === 0 && !this.#keepUnrouted) continue;
      const seq = this.#insertMessage.run(m.id, m.topic, m.body, m.headers, m.priority, m.expires_at, now)
        .lastInsertRowid as number;
      for (const g of groups) this.#insertDelivery.run(g, m.priority, seq, now);
      fanned += groups.length;
    }
    return fanned;
  }

  /** Declares `group` durably for `pattern`: from now on it gets a copy of every matching message. */
  declareGroup(group: string, pattern: string, now: number): void {
    this.#declareGroup.run(group, pattern, now);
  }

  /** A read-only check, so that idle polls never take the write lock. */
  hasReady(group: string, now: number): boolean {
    return this.#hasReady.get(group, now) !== undefined;
  }

  /**
   * Leases up to `max` ready rows of `group` (priority desc, then publish order) until
   * `leaseUntilMs`; rows whose message expired are dead-lettered (`expired`) instead. Call inside
   * {@link runBatch}: the read and the lease must be one IMMEDIATE transaction, or two
   * processes could lease the same row.
   */
  claim(group: string, max: number, now: number, leaseUntilMs: number, token: number): ClaimedRow[] {
    const out: ClaimedRow[] = [];
    // Loop so that a run of expired rows does not leave the consumer idle until the next poll.
    while (out.length < max) {
      const wanted = max - out.length;
      const rows = this.#selectReady.all(group, now, wanted);
      for (const r of rows) {
        if (r.expires_at !== null && r.expires_at <= now) {
          const error = `expired at ${new Date(r.expires_at).toISOString()}`;
          this.#copyAny.run(this.#ids(), 'expired', error, now, group, r.priority, r.seq);
          this.#deleteDelivery.run(group, r.priority, r.seq);
          continue;
        }
        const attempt = r.attempt + 1;
        this.#lease.run(attempt, leaseUntilMs, token, group, r.priority, r.seq);
        out.push({
          message: toInbound(r),
          priority: r.priority,
          seq: r.seq,
          attempt,
          lastError: r.last_error ?? undefined,
        });
      }
      if (rows.length < wanted) break;
    }
    return out;
  }

  /** Settles a lease by deleting its row; the message stays for the retention sweep. Call inside a transaction. */
  ack(k: LeaseKey): boolean {
    return this.#ack.run(k.group, k.priority, k.seq, k.token).changes > 0;
  }

  /** Makes a leased row claimable again at `readyAtMs`; its next delivery shows `error` as lastError. */
  nack(k: LeaseKey, readyAtMs: number, error: string | undefined): boolean {
    return this.#nack.run(readyAtMs, error ?? null, k.group, k.priority, k.seq, k.token).changes > 0;
  }

  /** Keeps a lease at least until `untilMs`. */
  extend(k: LeaseKey, untilMs: number): boolean {
    return this.#extend.run(untilMs, k.group, k.priority, k.seq, k.token).changes > 0;
  }

  /**
   * Gives a lease back for immediate redelivery. One never handed out does not count as an attempt
   * and keeps `lastError` (the error its delivery carried); one handed out ended without an error.
   */
  release(k: LeaseKey, now: number, handedOut: boolean, lastError: string | undefined): boolean {
    const error = handedOut ? null : (lastError ?? null);
    return this.#release.run(now, handedOut ? 0 : 1, error, k.group, k.priority, k.seq, k.token).changes > 0;
  }

  /** Moves a leased row to the dead letters (with its own copy of the message). Call inside a transaction. */
  bury(k: LeaseKey, id: string, reason: string, error: string | undefined, now: number): boolean {
    if (this.#copyLeased.run(id, reason, error ?? null, now, k.group, k.priority, k.seq, k.token).changes === 0) {
      return false;
    }
    this.#deleteDelivery.run(k.group, k.priority, k.seq);
    return true;
  }

  /**
   * Stores `message` again, published now, for `group` alone (dead-letter replay). Call inside a
   * transaction. The new publish time also keeps seq order equal to time order, which retention relies on.
   */
  enqueueFor(group: string, message: MessageRow, now: number): void {
    const seq = this.#insertMessage.run(
      message.id,
      message.topic,
      message.body,
      message.headers,
      message.priority,
      message.expires_at,
      now,
    ).lastInsertRowid as number;
    this.#insertDelivery.run(group, message.priority, seq, now);
  }

  /** Counts delivery rows by state (a full scan: for health checks, not the hot path). */
  stats(now: number): DeliveryStats {
    return this.#stats.get(now, now, now) as DeliveryStats;
  }

  close(): void {
    this.db.close();
  }
}
