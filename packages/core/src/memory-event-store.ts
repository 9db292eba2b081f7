import { type CheckpointStore, memoryCheckpointStore } from './checkpoint-store.js';
import { createEventStore, type EventStoreOptions } from './create-event-store.js';
import type { EventStore, EventStoreEngine, PendingEvent, StoredEvent } from './event-store.js';

/** An in-process event store with its checkpoints. */
export interface MemoryEventStore extends EventStore {
  readonly checkpoints: CheckpointStore;
}

interface Row extends PendingEvent {
  readonly streamId: string;
  readonly version: number;
  readonly position: number;
}

function stored(r: Row): StoredEvent {
  // Parsed on every read, as the durable stores do: a reader never shares objects with the writer.
  return {
    streamId: r.streamId,
    version: r.version,
    position: r.position,
    id: r.id,
    type: r.type,
    data: JSON.parse(r.json),
    metadata: { ...r.metadata },
    time: r.time,
  };
}

/** The engine behind {@link memoryEventStore}: one array in position order, positions per stream. */
function memoryEngine(): EventStoreEngine {
  const all: Row[] = [];
  const streams = new Map<string, number[]>();
  return {
    async append(streamId, events, expectedVersion) {
      const positions = streams.get(streamId) ?? [];
      if (expectedVersion !== undefined && positions.length !== expectedVersion) {
        return { ok: false, actualVersion: positions.length };
      }
      const versionBefore = positions.length;
      const added = events.map((e, i) => {
        const row: Row = { ...e, streamId, version: versionBefore + i + 1, position: all.length + 1 };
        all.push(row);
        positions.push(row.position);
        return row.position;
      });
      streams.set(streamId, positions);
      return { ok: true, versionBefore, positions: added };
    },
    async readStream(streamId, fromVersion, max) {
      const positions = streams.get(streamId) ?? [];
      return positions.slice(fromVersion - 1, fromVersion - 1 + max).map((p) => stored(all[p - 1] as Row));
    },
    async readAll(fromPosition, max) {
      return all.slice(fromPosition - 1, fromPosition - 1 + max).map(stored);
    },
    async version(streamId) {
      return streams.get(streamId)?.length ?? 0;
    },
    async head() {
      return all.length;
    },
    close() {},
  };
}

/**
 * An event store in process memory (lost with the process): for tests, examples and single-process
 * use. Same contract as the durable stores; data is stored as JSON as they do.
 */
export function memoryEventStore(options: EventStoreOptions = {}): MemoryEventStore {
  return Object.assign(createEventStore(memoryEngine(), options), { checkpoints: memoryCheckpointStore() });
}
