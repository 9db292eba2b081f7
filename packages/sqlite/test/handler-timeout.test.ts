import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, createBus, handlerTimeout, memoryTransport, TimeoutError, type Transport } from '@agentbus/core';
import { sqliteTransport } from '@agentbus/sqlite';
import { afterAll, describe, expect, it } from 'vitest';

const dir = mkdtempSync(join(tmpdir(), 'agentbus-timeout-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const transports: [string, () => Transport][] = [
  ['memory', () => memoryTransport()],
  ['sqlite', () => sqliteTransport({ path: join(dir, `t-${Math.random().toString(36).slice(2)}.db`) })],
];

describe.each(transports)('handler timeout on %s', (_name, open) => {
  it('aborts the signal of a handler that runs too long and retries the message', async () => {
    const bus = createBus({ transport: open() });
    bus.use(handlerTimeout({ ms: 50 }));
    const reasons: unknown[] = [];
    let finish!: (attempt: number) => void;
    const finished = new Promise<number>((r) => {
      finish = r;
    });
    await bus.subscribe(
      'timeout.job',
      async (d) => {
        if (d.attempt === 1) {
          // A model call that hangs until it is told to stop.
          await new Promise<void>((resolve) => d.signal.addEventListener('abort', () => resolve(), { once: true }));
          reasons.push(d.signal.reason);
          return;
        }
        finish(d.attempt);
      },
      { group: 'g', backoff: { initialDelayMs: 1, maxDelayMs: 1 } },
    );
    await bus.publish('timeout.job', {});
    expect(await finished).toBe(2);
    expect(reasons).toHaveLength(1);
    expect(reasons[0]).toBeInstanceOf(TimeoutError);
    await bus.close();
  });

  it('leaves a handler that finishes in time alone', async () => {
    const bus = createBus({ transport: open() });
    bus.use(handlerTimeout({ ms: 5_000 }));
    let seen: { attempt: number; aborted: boolean } | undefined;
    let done!: () => void;
    const handled = new Promise<void>((r) => {
      done = r;
    });
    await bus.subscribe(
      'timeout.quick',
      (d) => {
        seen = { attempt: d.attempt, aborted: d.signal.aborted };
        done();
      },
      { group: 'g' },
    );
    await bus.publish('timeout.quick', {});
    await handled;
    expect(seen).toEqual({ attempt: 1, aborted: false });
    await bus.close();
  });
});

it('needs a positive timeout', () => {
  expect(() => handlerTimeout({ ms: 0 })).toThrow(ConfigError);
});
