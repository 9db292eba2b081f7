import { type ConsumeContext, HANDLED_SYNC, type Logger, type Middleware, type Next } from '@agentbus/core';
import { traceFields } from './pino-bus-logger.js';
import { settlementOutcome } from './settlement-outcome.js';

/**
 * Bus middleware that logs what goes wrong with deliveries, each record with `traceId`,
 * `spanId` (the consumer span when tracing runs outside this hook, else the envelope's
 * `traceparent`), `messageId`, `topic`, `group` and `attempt`:
 *
 * - `error` `message dead-lettered` — the handler's failure dead-letters it (`reason`, `err`)
 * - `warn` `handler failed; will retry` — a retryable failure before the last attempt (`err`)
 * - `warn` `handler dead-lettered its message` — the handler called `deadLetter` itself
 *
 * Add it after `tracing()` so that the records carry the consumer span's ids.
 */
export function deliveryLogging(logger: Logger): Middleware {
  const finish = (ctx: ConsumeContext, failed: boolean, err: unknown): void => {
    if (!failed && ctx.delivery.settledAs !== 'dead-letter') return;
    const outcome = settlementOutcome(ctx, failed, err);
    const env = ctx.envelope;
    const fields = {
      ...traceFields(env.traceparent),
      messageId: env.id,
      topic: env.topic,
      group: ctx.group,
      attempt: ctx.delivery.attempt,
      ...(failed ? { err } : {}),
    };
    if (!failed) logger.warn(fields, 'handler dead-lettered its message');
    else if (outcome.settlement === 'dead-letter')
      logger.error({ ...fields, reason: outcome.reason }, 'message dead-lettered');
    else if (outcome.settlement === 'nack') logger.warn(fields, 'handler failed; will retry');
    else logger.warn({ ...fields, settlement: outcome.settlement }, 'handler failed');
  };
  return {
    name: 'delivery-logging',
    consume(ctx: ConsumeContext, next: Next): Promise<void> {
      const done = next();
      if (done === HANDLED_SYNC) {
        finish(ctx, false, undefined);
        return done;
      }
      return done.then(
        () => finish(ctx, false, undefined),
        (err: unknown) => {
          finish(ctx, true, err);
          throw err;
        },
      );
    },
  };
}
