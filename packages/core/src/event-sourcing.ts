// Event sourcing: the event store contract and memory store, checkpoints, projections, the bus relay.
export * from './checkpoint-store.js';
export * from './create-event-store.js';
export * from './event-relay.js';
export * from './event-store.js';
export * from './memory-event-store.js';
export * from './projection.js';
