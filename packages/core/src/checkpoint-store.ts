/**
 * Where projections and relays keep how far they got: the last global position each one handled,
 * by name. Durable ones live beside the event store (`sqliteEventStore().checkpoints`,
 * `redisEventStore().checkpoints`); a read model in the same database may write its own.
 */
export interface CheckpointStore {
  /** The last position `name` saved, or 0 when it has saved none (start from the beginning). */
  load(name: string): Promise<number>;
  /** Records `position` as handled by `name` (saving 0 makes it start over). */
  save(name: string, position: number): Promise<void>;
}

/** Checkpoints in a Map (lost with the process; for tests and single-process use). */
export function memoryCheckpointStore(): CheckpointStore {
  const positions = new Map<string, number>();
  return {
    async load(name) {
      return positions.get(name) ?? 0;
    },
    async save(name, position) {
      positions.set(name, position);
    },
  };
}
