import type { DeadLetterOptions, LeaseOps, NackOptions } from '@agentbus/core';
import type { Client } from './connection.js';
import type { RedisKeys } from './keys.js';
import { toBusError } from './redis-errors.js';
import type { SettleBatcher } from './settle-batcher.js';

/** What the leases of one transport share. */
export interface LeaseContext {
  readonly keys: RedisKeys;
  readonly batcher: SettleBatcher;
  client(): Client;
  /** Adds a dead-letter stream to the registry the dead-letter store lists. */
  registerDeadLetters(key: string): Promise<void>;
}

/** Where a leased delivery sits: enough to settle it, and to check the lease is still held. */
export interface LeaseState {
  readonly topic: string;
  readonly group: string;
  readonly consumer: string;
  /** The stream the entry was read from (a priority stream or the group's retry stream). */
  readonly key: string;
  readonly entryId: string;
  /** The entry's delivery count when leased: with the consumer, the lease token. */
  readonly count: number;
  readonly priority: number;
  readonly publishedAtMs: number;
  readonly attempt: number;
  /** The last error the delivery carries (kept when it is released unseen). */
  readonly lastError: string | undefined;
}

/** One leased delivery. A settle from a lease that was lost (reclaimed elsewhere) does nothing. */
export class RedisLease implements LeaseOps {
  constructor(
    private readonly ctx: LeaseContext,
    readonly state: LeaseState,
  ) {}

  ack(): Promise<void> {
    const s = this.state;
    return this.ctx.batcher.add('ack', s.key, s.group, s.consumer, s.entryId, s.count);
  }

  extend(): Promise<void> {
    const s = this.state;
    return this.ctx.batcher.add('extend', s.key, s.group, s.consumer, s.entryId, s.count);
  }

  nack({ delayMs = 0, error }: NackOptions): Promise<void> {
    return this.requeue(delayMs, this.state.attempt, error);
  }

  /**
   * Back to the group at once (close). One handed out ended without an error; one never handed
   * out (prefetched) is not counted as an attempt and keeps its last error.
   */
  release(handedOut: boolean): Promise<void> {
    const s = this.state;
    return handedOut ? this.requeue(0, s.attempt, undefined) : this.requeue(0, s.attempt - 1, s.lastError);
  }

  /** A new entry for the group (retry stream or delayed set); its next delivery shows `lastError`. */
  async requeue(delayMs: number, attemptsMade: number, lastError: string | undefined): Promise<void> {
    const s = this.state;
    const { keys } = this.ctx;
    try {
      await this.ctx
        .client()
        .agentbusRequeue(
          3,
          s.key,
          keys.retry(s.topic, s.group),
          keys.delayed(s.topic, s.group),
          s.group,
          s.consumer,
          s.entryId,
          s.count,
          Math.max(0, Math.ceil(delayMs)),
          s.priority,
          s.publishedAtMs,
          Math.max(0, attemptsMade),
          lastError ?? '',
        );
    } catch (err) {
      throw toBusError(err, 'nack');
    }
  }

  async deadLetter(reason: string, { error }: DeadLetterOptions): Promise<void> {
    return this.bury(reason, error, this.state.attempt);
  }

  async bury(reason: string, error: string | undefined, attempts: number): Promise<void> {
    const s = this.state;
    const dlq = this.ctx.keys.deadLetter(s.topic, s.group);
    try {
      await this.ctx.registerDeadLetters(dlq);
      await this.ctx
        .client()
        .agentbusBury(
          2,
          s.key,
          dlq,
          s.group,
          s.consumer,
          s.entryId,
          s.count,
          s.priority,
          s.publishedAtMs,
          reason,
          error ?? '',
          attempts,
          s.topic,
        );
    } catch (err) {
      throw toBusError(err, 'dead-letter');
    }
  }
}
