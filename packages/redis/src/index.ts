export { RedisKeys } from './keys.js';
export {
  REDIS_TRANSPORT_DEFAULTS,
  type RedisRetentionOptions,
  type RedisTransportOptions,
  resolveRedisOptions,
} from './options.js';
export { RedisDeadLetterStore } from './redis-dead-letter-store.js';
export {
  type RedisIdempotencyStore,
  type RedisIdempotencyStoreOptions,
  redisIdempotencyStore,
} from './redis-idempotency-store.js';
export { RedisTransport, redisTransport } from './redis-transport.js';
