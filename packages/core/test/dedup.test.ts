import {
  ConfigError,
  createBus,
  dedup,
  idempotencyKey,
  ManualClock,
  memoryIdempotencyStore,
  memoryTransport,
} from '@agentbus/core';
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

  it('sees a completion made through the store with idempotencyKey, whatever the id holds, in every group apart', async () => {
    const store = memoryIdempotencyStore();
    const bus = createBus({ transport: memoryTransport() });
    bus.use(dedup({ store }));
    const ran: string[] = [];
    let ends = 0;
    let bothEnded!: () => void;
    const finished = new Promise<void>((r) => {
      bothEnded = r;
    });
    for (const group of ['a', 'b']) {
      // One at a time, in order: once a group handled 'end' it has been through the rest.
      await bus.subscribe(
        'dedup.key',
        (d) => {
          if (d.envelope.id === 'end') {
            if (++ends === 2) bothEnded();
          } else ran.push(`${group}:${d.envelope.id}`);
        },
        { group, concurrency: 1, prefetch: 1 },
      );
    }
    // The handler of group a already completed these (an outbox-style handler does it itself).
    for (const id of ['plain-id', 'with\u0000nul\u0000inside']) {
      await store.complete(idempotencyKey('a', { source: 'src', id }), 60_000);
    }
    for (const id of ['plain-id', 'with\u0000nul\u0000inside', 'fresh', 'end']) {
      await bus.publish('dedup.key', {}, { id, source: 'src' });
    }
    await finished;
    await bus.close();
    expect(ran.sort()).toEqual(['a:fresh', 'b:fresh', 'b:plain-id', 'b:with\u0000nul\u0000inside'].sort());
    // And the middleware's completions are what the store answers for those keys.
    expect(await store.begin(idempotencyKey('a', { source: 'src', id: 'fresh' }), 1)).toBe('done');
    expect(await store.begin(idempotencyKey('b', { source: 'src', id: 'with\u0000nul\u0000inside' }), 1)).toBe('done');
  });

  it('needs a store', () => {
    expect(() => dedup({} as never)).toThrow(ConfigError);
  });
});
