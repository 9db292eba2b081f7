import { type Envelope, withAttributes } from '../envelope.js';
import { ConfigError, ValidationError } from '../errors.js';
import type { Middleware } from '../middleware.js';
import type { SchemaRegistry } from './schema-registry.js';
import type { SchemaViolation } from './schema-violation.js';

export interface SchemaValidationOptions {
  readonly registry: SchemaRegistry;
  /** Validate outbound payloads: an invalid one rejects the publish and is not sent. */
  readonly onPublish?: boolean;
  /** Validate and upcast inbound payloads: an invalid one is dead-lettered (`validation`). */
  readonly onConsume?: boolean;
  /** Refuse messages whose type has no registered schema (by default they pass unchecked). */
  readonly requireSchema?: boolean;
}

export const SCHEMA_VALIDATION_DEFAULTS = Object.freeze({ onPublish: true, onConsume: true, requireSchema: false });

/**
 * Enforces the registry's schema contracts on a bus.
 *
 * Publish: the payload is validated against the envelope's `schemaversion` (stamped with the
 * latest version when absent); an invalid payload, an unregistered version, or (with
 * `requireSchema`) an unknown type rejects the publish with ValidationError (`data`: a
 * {@link SchemaViolation}) and nothing is sent — for a batch, nothing of the batch.
 *
 * Consume: the same check, then the payload is migrated to the latest version (see
 * {@link SchemaRegistry.upcast}) and the handler, and the consume hooks after this one, see the
 * migrated envelope. A failure throws ValidationError before the handler runs, which the bus
 * dead-letters at once with reason `validation`. An envelope without `schemaversion` is taken
 * to be at the latest version.
 *
 * Both sides count uses of deprecated versions and warn once per (type, version) through the
 * registry. Add it after middleware that verifies signatures (they see the envelope as sent).
 */
export function schemaValidation(options: SchemaValidationOptions): Middleware {
  const registry = options?.registry;
  // Duck-typed: a registry from another copy of this package (source and build side by side) works too.
  if (typeof registry?.upcast !== 'function' || typeof registry.assertValid !== 'function') {
    throw new ConfigError('must be a SchemaRegistry', { path: 'registry' });
  }
  const onPublish = flag(options.onPublish, SCHEMA_VALIDATION_DEFAULTS.onPublish, 'onPublish');
  const onConsume = flag(options.onConsume, SCHEMA_VALIDATION_DEFAULTS.onConsume, 'onConsume');
  const requireSchema = flag(options.requireSchema, SCHEMA_VALIDATION_DEFAULTS.requireSchema, 'requireSchema');
  const unknownType = (env: Envelope): never => {
    const data: SchemaViolation = { problem: 'unknown-type', type: env.type, errors: [] };
    throw new ValidationError(`no schema is registered for message type ${env.type}`, { data });
  };
  /** A topic some registration names carries only the types registered for it. */
  const checkTopic = (env: Envelope): void => {
    const types = registry.typesOn?.(env.topic);
    if (types === undefined || types.has(env.type)) return;
    const data: SchemaViolation = { problem: 'type-not-for-topic', type: env.type, errors: [] };
    throw new ValidationError(
      `message type ${env.type} is not registered for topic ${env.topic} (registered: ${[...types].join(', ')})`,
      { data },
    );
  };
  // The hooks are not async: a message they pass goes on as `next()` returns it, so the bus keeps
  // its synchronous fast paths; what they throw, the chain turns into a rejection.
  const publish: Middleware['publish'] = (ctx, next) => {
    const env = ctx.envelope;
    checkTopic(env);
    const latest = registry.latest(env.type);
    if (!latest) return requireSchema ? unknownType(env) : next();
    registry.assertValid(env.type, env.schemaversion, env.data);
    registry.recordUse(env.type, env.schemaversion, 'publish');
    if (env.schemaversion === undefined) ctx.envelope = withAttributes(env, { schemaversion: latest.version });
    return next();
  };
  const consume: Middleware['consume'] = (ctx, next) => {
    const env = ctx.envelope;
    checkTopic(env);
    if (!registry.has(env.type)) return requireSchema ? unknownType(env) : next();
    const migrated = registry.upcast(env);
    registry.recordUse(env.type, env.schemaversion, 'consume');
    if (migrated !== env) ctx.delivery.useEnvelope(migrated);
    return next();
  };
  return { name: 'schema-validation', ...(onPublish ? { publish } : {}), ...(onConsume ? { consume } : {}) };
}

function flag(value: unknown, fallback: boolean, path: string): boolean {
  if (value === undefined) return fallback;
  if (typeof value !== 'boolean') throw new ConfigError(`must be a boolean, got ${String(value)}`, { path });
  return value;
}
