import { ConfigError, createBus, dedup, ManualClock, memoryIdempotencyStore, memoryTransport } from '@agentbus/core';
import { describe, expect, it } from 'vitest';

describe('memory idempotency store', () => {
  it('claims a key once, remembers it as done for its TTL, and forgets it after', async () => {
    const clock = new ManualClock();
    const store = memoryIdempotencyStore({ clock });
    expect(await store.begin('k', 1_000)).toBe('new');
    expect(await store.begin('k', 1_000)).toBe('busy');
    await store.complete('k', 5_000);
    expect(await store.begin('k', 1_000)).toBe('done');
    clock.advance(5_001);
    expect(await store.begin('k', 1_000)).toBe('new');
  });

  it('lets a released or expired claim be taken again', async () => {
    const clock = new ManualClock();
    const store = memoryIdempotencyStore({ clock });
    expect(await store.begin('a', 1_000)).toBe('new');
    await store.release('a');
    expect(await store.begin('a', 1_000)).toBe('new');
    clock.advance(1_001); // the claimer died: its claim runs out
    expect(await store.begin('a', 1_000)).toBe('new');
    await store.complete('a', 10_000);
    await store.release('a'); // a release never undoes a completion
    expect(await store.begin('a', 1_000)).toBe('done');
  });

  it('keeps at most maxKeys keys, evicting the oldest', async () => {
    const store = memoryIdempotencyStore({ maxKeys: 2 });
    for (const k of ['x', 'y', 'z']) {
      await store.begin(k, 60_000);
      await store.complete(k, 60_000);
    }
    expect(await store.begin('z', 1)).toBe('done');
    expect(await store.begin('y', 1)).toBe('done');
    expect(await store.begin('x', 1)).toBe('new');
  });
});

describe('dedup middleware', () => {
  it('lets a delivery whose handler failed run again', async () => {
    const bus = createBus({ transport: memoryTransport() });
    bus.use(dedup({ store: memoryIdempotencyStore() }));
    let calls = 0;
    let done!: () => void;
    const finished = new Promise<void>((r) => {
      done = r;
    });
    await bus.subscribe(
      'dedup.retry',
      () => {
        if (++calls === 1) throw new Error('model call failed');
        done();
      },
      { group: 'g', backoff: { initialDelayMs: 1, maxDelayMs: 1 } },
    );
    await bus.publish('dedup.retry', {});
    await finished;
    expect(calls).toBe(2);
    await bus.close();
  });

  it('needs a store', () => {
    expect(() => dedup({} as never)).toThrow(ConfigError);
  });
});
