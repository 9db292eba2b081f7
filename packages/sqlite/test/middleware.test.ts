import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { middlewareConformance } from '@agentbus/conformance';
import { ConfigError, createBus, handlerTimeout, memoryTransport, type Transport } from '@agentbus/core';
import {
  type SqliteSequenceStore,
  sqliteIdempotencyStore,
  sqliteSequenceStore,
  sqliteTransport,
} from '@agentbus/sqlite';
import { afterAll, describe, expect, it } from 'vitest';

const dir = mkdtempSync(join(tmpdir(), 'agentbus-middleware-'));
const sequenceStores: SqliteSequenceStore[] = [];
afterAll(() => {
  for (const s of sequenceStores.splice(0)) s.close();
  rmSync(dir, { recursive: true, force: true });
});

const transports: [string, () => Transport][] = [
  ['memory', () => memoryTransport()],
  ['sqlite', () => sqliteTransport({ path: join(dir, `t-${Math.random().toString(36).slice(2)}.db`) })],
];

middlewareConformance({ name: 'memory', open: () => memoryTransport() });
middlewareConformance({
  name: 'SQLite',
  open: () => sqliteTransport({ path: join(dir, `t-${Math.random().toString(36).slice(2)}.db`) }),
  store: () => sqliteIdempotencyStore({ path: join(dir, 'idempotency.db') }),
  // Sequencing through the durable store, a file of its own per test.
  sequenceStore: () => {
    const s = sqliteSequenceStore({ path: join(dir, `seq-${Math.random().toString(36).slice(2)}.db`) });
    sequenceStores.push(s);
    return s;
  },
});

describe.each(transports)('handler timeout on %s', (_name, open) => {
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

it('handler timeout needs a positive timeout', () => {
  expect(() => handlerTimeout({ ms: 0 })).toThrow(ConfigError);
});
