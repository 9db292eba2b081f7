import { createBus, silentLogger, type Transport, workerPool } from '@agentbus/core';
import { describe, expect, it } from 'vitest';
import { until } from './wait.js';

export interface WorkQueueConformanceOptions {
  readonly name: string;
  readonly open: () => Transport;
  readonly skipReason?: string | undefined;
}

let n = 0;

/** Work queues end to end on one transport: scaling a worker pool mid-stream loses and doubles nothing. */
export function workQueueConformance(o: WorkQueueConformanceOptions): void {
  describe.skipIf(o.skipReason)(`work queue on ${o.name}`, () => {
    it('scales a worker pool 4 → 1 → 3 mid-stream: every job handled once, stats add up', async () => {
      const id = `wq${process.pid}x${Date.now().toString(36)}x${n++}`;
      const topic = `${id}.jobs`;
      const bus = createBus({ transport: o.open(), logger: silentLogger });
      const counts = new Map<number, number>();
      const pool = await workerPool<{ n: number }>(bus, {
        pattern: topic,
        group: `${id}-workers`,
        workers: 4,
        concurrency: 2,
        prefetch: 8,
        ackTimeoutMs: 10_000,
        handler: async (d) => {
          await new Promise((r) => setTimeout(r, 2));
          counts.set(d.data.n, (counts.get(d.data.n) ?? 0) + 1);
        },
      });
      try {
        const total = 300;
        await bus.publishBatch(Array.from({ length: total }, (_, k) => ({ topic, data: { n: k } })));
        await until(() => counts.size >= 60, 20_000, 'some jobs handled');
        await pool.scale(1);
        await until(() => counts.size >= 150, 20_000, 'more handled by one worker');
        await pool.scale(3);
        await until(() => counts.size === total, 30_000, 'every job handled');
        const stats = await pool.stats();
        expect(stats.workers).toBe(3);
        expect(stats.handled).toBe(total);
        expect([...counts.entries()].filter(([, c]) => c !== 1)).toEqual([]);
        if (stats.backlog !== undefined) expect(stats.backlog).toBe(0);
      } finally {
        await pool.close();
        await bus.close();
      }
    });
  });
}
