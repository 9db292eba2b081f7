export { RedisKeys } from './keys.js';
export {
  REDIS_TRANSPORT_DEFAULTS,
  type RedisRetentionOptions,
  type RedisTransportOptions,
  resolveRedisOptions,
} from './options.js';
export { RedisDeadLetterStore } from './redis-dead-letter-store.js';
export { type RedisEventStore, type RedisEventStoreOptions, redisEventStore } from './redis-event-store.js';
export {
  type RedisIdempotencyStore,
  type RedisIdempotencyStoreOptions,
  redisIdempotencyStore,
} from './redis-idempotency-store.js';
export {
  REDIS_RATE_LIMITER_DEFAULTS,
  type RedisRateLimiter,
  type RedisRateLimiterOptions,
  redisRateLimiter,
} from './redis-rate-limiter.js';
export {
  type RedisSagaRepository,
  type RedisSagaRepositoryOptions,
  redisSagaRepository,
} from './redis-saga-repository.js';
export {
  type RedisSequenceStore,
  type RedisSequenceStoreOptions,
  redisSequenceStore,
} from './redis-sequence-store.js';
export { RedisTransport, redisTransport } from './redis-transport.js';
