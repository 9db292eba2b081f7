import { until } from '@agentbus/conformance';
import { ConfigError, createBus, ManualClock, memoryTransport, workerPool } from '@agentbus/core';
import { describe, expect, it } from 'vitest';

describe('worker pool', () => {
  it('scales down mid-stream without losing or doubling work, and reports stats', async () => {
    const transport = memoryTransport();
    const bus = createBus({ transport });
    const counts = new Map<number, number>();
    const pool = await workerPool<{ n: number }>(bus, {
      pattern: 'wq.jobs',
      group: 'wq-workers',
      workers: 4,
      concurrency: 2,
      prefetch: 8,
      handler: async (d) => {
        await new Promise((r) => setTimeout(r, 1));
        counts.set(d.data.n, (counts.get(d.data.n) ?? 0) + 1);
      },
    });
    expect(pool.size).toBe(4);
    await bus.publishBatch(Array.from({ length: 400 }, (_, n) => ({ topic: 'wq.jobs', data: { n } })));
    await until(() => counts.size >= 100, 10_000, 'a quarter done');
    await pool.scale(1);
    expect((await pool.stats()).workers).toBe(1);
    await until(() => counts.size === 400, 20_000, 'all handled');
    await pool.scale(3);
    const stats = await pool.stats();
    expect(stats).toMatchObject({ group: 'wq-workers', workers: 3, handled: 400, failed: 0, inFlight: 0 });
    expect(stats.throughputPerS).toBeGreaterThan(0);
    expect([...counts.values()].every((c) => c === 1)).toBe(true);
    await pool.close();
    await bus.close();
  });

  it('autoscales between bounds on the backlog, scaling down only after it stayed low', async (ctx) => {
    const transport = memoryTransport();
    if (typeof transport.groupStats !== 'function') ctx.skip();
    const clock = new ManualClock();
    const bus = createBus({ transport });
    let release!: () => void;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    const pool = await workerPool(bus, {
      pattern: 'wq.auto',
      handler: () => gate,
      autoscale: { min: 1, max: 5, backlogPerWorker: 10, intervalMs: 3_600_000, scaleDownAfterMs: 5_000 },
      clock,
    });
    expect(pool.size).toBe(1);
    await bus.publishBatch(Array.from({ length: 100 }, () => ({ topic: 'wq.auto', data: {} })));
    expect(await pool.autoscaleOnce()).toBe(5); // 100 waiting / 10 per worker, capped at 5
    release();
    await until(async () => (await transport.groupStats?.('wq.auto'))?.backlog === 0, 10_000, 'backlog drained');
    expect(await pool.autoscaleOnce()).toBe(5); // low, but not for long enough yet
    clock.advance(5_000);
    expect(await pool.autoscaleOnce()).toBe(1);
    await pool.close();
    await bus.close();
  });

  it('refuses bad options', () => {
    const bus = createBus({ transport: memoryTransport() });
    expect(() => workerPool(bus, { pattern: 'x', handler: undefined as never })).toThrow(ConfigError);
    expect(() => workerPool(bus, { pattern: 'x', handler: () => {}, autoscale: { min: 3, max: 2 } })).toThrow(
      ConfigError,
    );
  });
});
