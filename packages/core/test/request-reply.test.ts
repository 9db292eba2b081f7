import { until } from '@agentbus/conformance';
import { ClosedError, createBus, HandlerError, memoryTransport, TimeoutError, ValidationError } from '@agentbus/core';
import { describe, expect, it } from 'vitest';

describe('request-reply', () => {
  it('answers a request with the reply handler result, matched by correlation id', async () => {
    const transport = memoryTransport();
    const bus = createBus({ transport });
    await bus.reply<{ a: number; b: number }>('math.add', (d) => d.data.a + d.data.b, { concurrency: 4 });
    const results = await Promise.all([1, 2, 3].map((a) => bus.request<number>('math.add', { a, b: 10 })));
    expect(results).toEqual([11, 12, 13]);
    await bus.close();
  });

  it('refuses a request whose id is already waiting for its reply: it would take that reply', async () => {
    const bus = createBus({ transport: memoryTransport() });
    let release: () => void = () => {};
    const held = new Promise<void>((r) => {
      release = r;
    });
    await bus.reply<number>('slow.echo', async (d) => {
      await held;
      return d.data;
    });
    const first = bus.request<number>('slow.echo', 1, { id: 'same-id' });
    await expect(bus.request('slow.echo', 2, { id: 'same-id' })).rejects.toBeInstanceOf(ValidationError);
    release();
    expect(await first).toBe(1);
    // Once answered, the id is free again.
    expect(await bus.request<number>('slow.echo', 3, { id: 'same-id' })).toBe(3);
    await bus.close();
  });

  it('gives each of two requesters its own replies', async () => {
    const transport = memoryTransport();
    const replier = createBus({ transport, ownsTransport: false });
    const alice = createBus({ transport, ownsTransport: false, source: 'alice' });
    const bob = createBus({ transport, ownsTransport: false, source: 'bob' });
    await replier.reply<string>('who', (d) => `${d.envelope.source}:${d.data}`, { concurrency: 8 });
    const [a, b] = await Promise.all([
      Promise.all(Array.from({ length: 10 }, (_, i) => alice.request<string>('who', `${i}`))),
      Promise.all(Array.from({ length: 10 }, (_, i) => bob.request<string>('who', `${i}`))),
    ]);
    expect(a).toEqual(Array.from({ length: 10 }, (_, i) => `alice:${i}`));
    expect(b).toEqual(Array.from({ length: 10 }, (_, i) => `bob:${i}`));
    await Promise.all([replier.close(), alice.close(), bob.close()]);
    await transport.close();
  });

  it('rebuilds a replier error as the same class, and a plain error as HandlerError', async () => {
    const bus = createBus({ transport: memoryTransport() });
    await bus.reply<string>('check', (d) => {
      if (d.data === 'bad') throw new ValidationError('prompt is empty', { data: { field: 'prompt' } });
      throw new Error('tool crashed');
    });
    const bad = await bus.request('check', 'bad').catch((e: unknown) => e);
    expect(bad).toBeInstanceOf(ValidationError);
    expect(bad).toMatchObject({ code: 'VALIDATION', message: 'prompt is empty', data: { field: 'prompt' } });
    const crashed = await bus.request('check', 'x').catch((e: unknown) => e);
    expect(crashed).toBeInstanceOf(HandlerError);
    expect((crashed as HandlerError).message).toBe('tool crashed');
    await bus.close();
  });

  it('times out with TimeoutError, then drops and counts the late reply', async () => {
    const bus = createBus({ transport: memoryTransport() });
    let release!: () => void;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    await bus.reply('slow', async () => {
      await gate;
      return 'finally';
    });
    const err = await bus.request('slow', {}, { timeoutMs: 50 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TimeoutError);
    release();
    await until(() => bus.lateReplies === 1, 5_000, 'the late reply');
    await bus.close();
  });

  it('stops waiting when its signal aborts, with the signal reason', async () => {
    const bus = createBus({ transport: memoryTransport() });
    let release!: () => void;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    let received = 0;
    await bus.reply('slow', () => {
      received++;
      return gate;
    });
    const ac = new AbortController();
    const pending = bus.request('slow', {}, { signal: ac.signal, timeoutMs: 60_000 });
    await until(() => received === 1, 5_000, 'the request to arrive');
    ac.abort(new Error('user pressed stop'));
    await expect(pending).rejects.toThrow('user pressed stop');
    await expect(bus.request('slow', {}, { signal: ac.signal })).rejects.toThrow('user pressed stop');
    release();
    await until(() => bus.lateReplies === 1, 5_000, 'the reply to the cancelled request, dropped');
    await bus.close();
  });

  it('rejects waiting requests with ClosedError when the bus closes', async () => {
    const transport = memoryTransport();
    const replierBus = createBus({ transport, ownsTransport: false });
    let release!: () => void;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    let received = 0;
    await replierBus.reply('hang', () => {
      received++;
      return gate;
    });
    const bus = createBus({ transport, ownsTransport: false });
    const pending = bus.request('hang', {});
    await until(() => received === 1, 5_000, 'the request to arrive');
    const closing = bus.close();
    await expect(pending).rejects.toBeInstanceOf(ClosedError);
    await closing;
    expect(() => bus.request('hang', {})).toThrow(ClosedError);
    release();
    await replierBus.close();
    await transport.close();
  });
});
