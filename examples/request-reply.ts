// Request-reply on the embedded store: a "calculator" agent answers, a "planner" agent asks.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createBus, silentLogger, TimeoutError, ValidationError } from '@agentbus/core';
import { sqliteTransport } from '@agentbus/sqlite';

const dir = mkdtempSync(join(tmpdir(), 'agentbus-example-'));
const path = join(dir, 'bus.db');
// Two buses on one file, as two processes would be.
const calculator = createBus({ transport: sqliteTransport({ path }), source: 'calculator', logger: silentLogger });
const planner = createBus({ transport: sqliteTransport({ path }), source: 'planner', logger: silentLogger });

await calculator.reply<{ op: string; a: number; b: number }>('tools.calc', (d) => {
  const { op, a, b } = d.data;
  if (op === 'add') return a + b;
  if (op === 'div') {
    if (b === 0) throw new ValidationError('division by zero', { data: { field: 'b' } });
    return a / b;
  }
  return new Promise((r) => setTimeout(() => r('too late'), 1_000)); // a slow tool
});

console.log('2 + 3 =', await planner.request('tools.calc', { op: 'add', a: 2, b: 3 }));
try {
  await planner.request('tools.calc', { op: 'div', a: 1, b: 0 });
} catch (err) {
  console.log('remote error rebuilt as', (err as Error).constructor.name, '-', (err as Error).message);
}
try {
  await planner.request('tools.calc', { op: 'sleep', a: 0, b: 0 }, { timeoutMs: 300 });
} catch (err) {
  console.log('timed out:', err instanceof TimeoutError);
}

await planner.close();
await calculator.close(); // waits for the slow call; its late reply goes nowhere
rmSync(dir, { recursive: true, force: true });
