export {
  type ResolvedSqliteOptions,
  resolveSqliteOptions,
  SQLITE_TRANSPORT_DEFAULTS,
  type SqliteRetentionOptions,
  type SqliteSynchronous,
  type SqliteTransportOptions,
} from './options.js';
export { SCHEMA_VERSION } from './schema.js';
export { SqliteDeadLetterStore } from './sqlite-dead-letter-store.js';
export { type SqliteEventStore, type SqliteEventStoreOptions, sqliteEventStore } from './sqlite-event-store.js';
export {
  type SqliteIdempotencyStore,
  type SqliteIdempotencyStoreOptions,
  sqliteIdempotencyStore,
} from './sqlite-idempotency-store.js';
export {
  type SqliteSagaRepository,
  type SqliteSagaRepositoryOptions,
  sqliteSagaRepository,
} from './sqlite-saga-repository.js';
export {
  type SqliteSequenceStore,
  type SqliteSequenceStoreOptions,
  sqliteSequenceStore,
} from './sqlite-sequence-store.js';
export { SqliteTransport, sqliteTransport } from './sqlite-transport.js';
