// A worker pool on the embedded store: scaled up and down while it works through 300 jobs.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createBus, silentLogger, workerPool } from '@agentbus/core';
import { sqliteTransport } from '@agentbus/sqlite';

const dir = mkdtempSync(join(tmpdir(), 'agentbus-example-'));
const bus = createBus({ transport: sqliteTransport({ path: join(dir, 'bus.db') }), logger: silentLogger });
const done = new Set<number>();
const pool = await workerPool<{ n: number }>(bus, {
  pattern: 'jobs.summarize',
  workers: 1,
  concurrency: 4,
  handler: async (d) => {
    await new Promise((r) => setTimeout(r, 5)); // a model call
    done.add(d.data.n);
  },
});
await bus.publishBatch(Array.from({ length: 300 }, (_, n) => ({ topic: 'jobs.summarize', data: { n } })));
const report = async (what: string) => {
  const s = await pool.stats();
  console.log(
    `${what}: workers ${s.workers}, handled ${s.handled}, in flight ${s.inFlight}, backlog ${s.backlog ?? '?'}`,
  );
};
await report('started');
await pool.scale(6);
await report('scaled up');
while (done.size < 200) await new Promise((r) => setTimeout(r, 20));
await pool.scale(2); // drains four workers: nothing lost, nothing twice
await report('scaled down');
while (done.size < 300) await new Promise((r) => setTimeout(r, 20));
await report('finished');
await pool.close();
await bus.close();
rmSync(dir, { recursive: true, force: true });
