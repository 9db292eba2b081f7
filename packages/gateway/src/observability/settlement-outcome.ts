import { BusError, type ConsumeContext, DeadLetterReason, isRetryable } from '@agentbus/core';

/** How a delivery ends, as seen from a consume hook once its `next()` settled. */
export interface SettlementOutcome {
  /** `unknown`: settled some other way (its lease ran out, a hook settled the raw delivery). */
  readonly settlement: 'ack' | 'nack' | 'dead-letter' | 'unknown';
  /** The dead-letter reason, when dead-lettered by the bus. */
  readonly reason?: string;
}

const ACK: SettlementOutcome = Object.freeze({ settlement: 'ack' });
const NACK: SettlementOutcome = Object.freeze({ settlement: 'nack' });
const DEAD_LETTER: SettlementOutcome = Object.freeze({ settlement: 'dead-letter' });
const UNKNOWN: SettlementOutcome = Object.freeze({ settlement: 'unknown' });

/**
 * What the bus will do with a delivery whose consume chain (from this hook inward) resolved
 * (`failed` false) or rejected with `err`, following the bus's rules: a delivery the handler
 * settled itself keeps that; resolved → ack; a non-retryable error → dead letter (reason
 * `unrecoverable` or the error's code in kebab case); a retryable one on the last attempt →
 * dead letter `max-attempts`; else nack.
 *
 * It is a prediction made where a hook can see it: middleware outside this hook may still
 * change the outcome (swallow the error, settle the delivery itself), and the dead letters the
 * bus writes before any hook runs (undecodable, expired, over `maxAttempts` on arrival) are
 * never seen by middleware at all.
 */
export function settlementOutcome(ctx: ConsumeContext, failed: boolean, err?: unknown): SettlementOutcome {
  const { delivery } = ctx;
  const own = delivery.settledAs;
  if (own !== undefined) return own === 'ack' ? ACK : own === 'nack' ? NACK : DEAD_LETTER;
  if (delivery.settled) return UNKNOWN;
  if (!failed) return ACK;
  if (!isRetryable(err)) return { settlement: 'dead-letter', reason: deadLetterReasonOf(err) };
  if (delivery.attempt >= ctx.subscription.maxAttempts)
    return { settlement: 'dead-letter', reason: DeadLetterReason.maxAttempts };
  return NACK;
}

/** The reason the bus records when a handler's non-retryable error dead-letters its message. */
function deadLetterReasonOf(err: unknown): string {
  if (err instanceof BusError && err.code !== 'UNRECOVERABLE') return err.code.toLowerCase().replaceAll('_', '-');
  return DeadLetterReason.unrecoverable;
}
