import { createBus, memoryTransport, UnrecoverableError } from '@agentbus/core';
import { describe, expect, it } from 'vitest';

async function until(cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('bus on memory', () => {
  it('delivers, retries and dead-letters', async () => {
    const bus = createBus({ transport: memoryTransport() });
    const seen: string[] = [];
    await bus.subscribe<{ n: number }>(
      'task.>',
      async (d) => {
        seen.push(`${d.data.n}:${d.attempt}`);
        if (d.data.n === 2 && d.attempt === 1) throw new Error('flaky');
        if (d.data.n === 3) throw new UnrecoverableError('poison');
      },
      { group: 'w', backoff: { initialDelayMs: 10 } },
    );
    await bus.publish('task.a', { n: 1 });
    await bus.publishBatch([
      { topic: 'task.b', data: { n: 2 } },
      { topic: 'task.c', data: { n: 3 } },
    ]);
    await until(() => seen.includes('2:2') && seen.includes('3:1'));
    await until(() => true);
    const dead = await bus.transport.deadLetters.list();
    expect(dead.map((d) => d.reason)).toEqual(['unrecoverable']);
    await bus.close();
  });
});
