import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { circuitBreakerScenario, handlerTimeoutScenario } from '@agentbus/conformance';
import { ConfigError, createBus, handlerTimeout, memoryTransport, TimeoutError, type Transport } from '@agentbus/core';
import { sqliteTransport } from '@agentbus/sqlite';
import { afterAll, describe, expect, it } from 'vitest';

const dir = mkdtempSync(join(tmpdir(), 'agentbus-middleware-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const transports: [string, () => Transport][] = [
  ['memory', () => memoryTransport()],
  ['sqlite', () => sqliteTransport({ path: join(dir, `t-${Math.random().toString(36).slice(2)}.db`) })],
];

describe.each(transports)('middleware on %s', (_name, open) => {
  it('handler timeout: aborts the signal of a handler that runs too long and retries the message', async () => {
    const bus = createBus({ transport: open() });
    const r = await handlerTimeoutScenario(bus, 'timeout.job', 'g');
    expect(r.finishedAttempt).toBe(2);
    expect(r.abortReason).toBeInstanceOf(TimeoutError);
    await bus.close();
  });

  it('handler timeout: leaves a handler that finishes in time alone', async () => {
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

  it('circuit breaker: runs no handler while open, then handles everything once the dependency is back', async () => {
    const bus = createBus({ transport: open() });
    const r = await circuitBreakerScenario(bus, 'cb.work', 'g');
    expect(r.handled).toEqual([0, 1, 2, 3, 4]);
    expect(r.runsAfterOpen).toBe(5); // the trial, then the four others
    expect(r.finalState).toBe('closed');
    await bus.close();
  });
});

it('handler timeout needs a positive timeout', () => {
  expect(() => handlerTimeout({ ms: 0 })).toThrow(ConfigError);
});
