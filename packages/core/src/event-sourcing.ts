// Event sourcing: the event store contract and memory store, checkpoints, projections, the bus relay.
export * from './checkpoint-store.js';
export * from './event-relay.js';
export {
  type AppendOptions,
  type AppendResult,
  createEventStore,
  type EngineAppendOutcome,
  EVENT_STORE_DEFAULTS,
  type EventHandler,
  type EventStore,
  type EventStoreEngine,
  type EventStoreOptions,
  type EventSubscription,
  type ExpectedVersion,
  foldStream,
  type NewEvent,
  type PendingEvent,
  type ReadAllOptions,
  type ReadOptions,
  type StoredEvent,
  type SubscribeAllOptions,
} from './event-store.js';
export * from './memory-event-store.js';
export * from './projection.js';
