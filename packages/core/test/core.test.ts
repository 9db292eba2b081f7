import {
  assertPattern,
  BusError,
  ConfigError,
  createBus,
  createEnvelope,
  errorFromWire,
  ForbiddenError,
  jsonCodec,
  ManualClock,
  memoryTransport,
  msgpackCodec,
  payloadDigest,
  type RawDelivery,
  SerializationError,
  type Subscription,
  type Transport,
  topicMatches,
  UnrecoverableError,
  uuidv7,
  ValidationError,
} from '@agentbus/core';
import { describe, expect, it } from 'vitest';

describe('uuidv7', () => {
  it('is a version 7 RFC 9562 UUID and sorts in creation order, also within one millisecond', () => {
    const ids = Array.from({ length: 5000 }, () => uuidv7(2_000_000_000_000));
    for (const id of ids) expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect([...ids].sort()).toEqual(ids);
    expect(new Set(ids).size).toBe(ids.length);
    expect(uuidv7(2_000_000_000_001) > ids.at(-1)!).toBe(true);
    expect(ids[0]!.slice(0, 13).replace('-', '')).toBe((2_000_000_000_000).toString(16).padStart(12, '0'));
  });
});

describe('topics', () => {
  it('matches * to exactly one segment and a final > to one or more', () => {
    expect(topicMatches('a.*.c', 'a.b.c')).toBe(true);
    expect(topicMatches('a.*.c', 'a.b.b.c')).toBe(false);
    expect(topicMatches('a.>', 'a.b')).toBe(true);
    expect(topicMatches('a.>', 'a.b.c')).toBe(true);
    expect(topicMatches('a.>', 'a')).toBe(false);
    expect(topicMatches('>', 'a')).toBe(true);
    expect(topicMatches('a.b', 'a.b')).toBe(true);
    expect(topicMatches('a.b', 'a.b.c')).toBe(false);
  });

  it('refuses malformed patterns and topics with ValidationError', () => {
    expect(() => assertPattern('a.>.b')).toThrow(ValidationError);
    expect(() => assertPattern('')).toThrow(ValidationError);
    expect(() => createEnvelope('a.*', {}, {}, { id: 'x', source: 's', nowMs: 0 })).toThrow(ValidationError);
    expect(() => createEnvelope('a..b', {}, {}, { id: 'x', source: 's', nowMs: 0 })).toThrow(ValidationError);
  });
});

describe('codecs', () => {
  const clock = new ManualClock();
  const env = createEnvelope(
    'task.run',
    { text: 'héllo', list: [1, 2, { deep: null }], n: -1.25 },
    { priority: 8, workflowid: 'wf', headers: { a: 'b' }, ttlMs: 1000 },
    { id: uuidv7(clock.now()), source: 'agent://a', nowMs: clock.now() },
  );

  for (const codec of [jsonCodec(), msgpackCodec()]) {
    it(`${codec.name} round-trips an envelope and refuses garbage with SerializationError`, () => {
      expect(codec.decode(codec.encode(env))).toEqual(env);
      expect(() => codec.decode(Buffer.from([0xc1, 0xff, 0x00]))).toThrow(SerializationError);
    });
  }

  it('refuses an envelope whose attributes have the wrong type (a msgpack timestamp for expiresat …) with ValidationError', () => {
    const codec = msgpackCodec();
    const bad: Record<string, unknown>[] = [
      { expiresat: new Date(clock.now() + 1000) },
      { correlationid: 7 },
      { replyto: null },
      { traceparent: ['00'] },
      { sequence: '3' },
      { sequence: 1.5 },
    ];
    for (const change of bad) {
      expect(() => codec.decode(codec.encode({ ...env, ...change } as typeof env)), JSON.stringify(change)).toThrow(
        ValidationError,
      );
    }
    expect(codec.decode(codec.encode({ ...env, sequence: 3 }))).toMatchObject({ sequence: 3 });
  });

  it('refuses to build such an envelope at publish, where the caller sees why', () => {
    const ids = { id: uuidv7(clock.now()), source: 'agent://a', nowMs: clock.now() };
    expect(() => createEnvelope('task.run', 1, { sequence: 1.5 }, ids)).toThrow(/'sequence' must be an integer/);
    expect(() => createEnvelope('task.run', 1, { correlationid: 42 as unknown as string }, ids)).toThrow(
      /'correlationid' must be a string/,
    );
    expect(createEnvelope('task.run', 1, { sequence: 2, correlationid: 'c' }, ids)).toMatchObject({ sequence: 2 });
  });

  it('json encodeMany gives the same bytes as encode one by one, as independent views', () => {
    const codec = jsonCodec();
    const envs = [env, { ...env, id: uuidv7(clock.now()), data: { emoji: '🦊 ünïcode' } }, env];
    const many = codec.encodeMany?.(envs) ?? [];
    expect(many.map((b) => Buffer.from(b).toString('hex'))).toEqual(
      envs.map((e) => Buffer.from(codec.encode(e)).toString('hex')),
    );
    expect(codec.decode(many[1]!)).toEqual(envs[1]);
  });

  it('digests the encoded bytes with SHA-256', () => {
    expect(payloadDigest(Buffer.from('abc'))).toBe(
      'sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad',
    );
  });
});

describe('errors', () => {
  it('crosses the wire as { code, message, retryable, data } and is rebuilt as the same class', () => {
    const wire = new ForbiddenError('no publish on x', { data: { permission: 'publish' } }).toWire();
    expect(wire).toEqual({
      code: 'FORBIDDEN',
      message: 'no publish on x',
      retryable: false,
      data: { permission: 'publish' },
    });
    const back = errorFromWire(JSON.parse(JSON.stringify(wire)));
    expect(back).toBeInstanceOf(ForbiddenError);
    expect(back.data).toEqual({ permission: 'publish' });
    const unknown = errorFromWire({ code: 'SOMETHING_NEW', message: 'm', retryable: true });
    expect(unknown).toBeInstanceOf(BusError);
    expect(unknown.code).toBe('SOMETHING_NEW');
    expect(unknown.retryable).toBe(true);
    expect(new UnrecoverableError('x').retryable).toBe(false);
  });
});

describe('configuration', () => {
  it('names the offending field in a ConfigError', async () => {
    expect(() => createBus({} as never)).toThrow(ConfigError);
    const bus = createBus({ transport: memoryTransport() });
    const err = await bus.subscribe('a', () => {}, { concurrency: 0 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).path).toBe('subscribe.concurrency');
    const err2 = await bus.subscribe('a', () => {}, { backoff: { factor: 0.5 } }).catch((e: unknown) => e);
    expect((err2 as ConfigError).path).toBe('subscribe.backoff.factor');
    expect(() => createBus({ transport: memoryTransport(), maxPayloadBytes: -1 })).toThrow(/maxPayloadBytes/);
    await bus.close();
  });
});

describe('injectable clock', () => {
  it('dead-letters an expired message by the injected clock, without waiting', async () => {
    const clock = new ManualClock();
    const transport = memoryTransport({ clock });
    const bus = createBus({ transport, clock });
    const declare = await bus.subscribe('t.ttl', () => {}, { group: 'g' });
    await declare.close();
    await bus.publish('t.ttl', { n: 1 }, { ttlMs: 60_000 });
    clock.advance(60_001);
    const seen: unknown[] = [];
    await bus.subscribe('t.ttl', (d) => void seen.push(d.data), { group: 'g' });
    for (let i = 0; i < 100 && (await transport.deadLetters.list()).length === 0; i++) {
      await new Promise((r) => setTimeout(r, 5));
    }
    expect((await transport.deadLetters.list()).map((d) => d.reason)).toEqual(['expired']);
    expect(seen).toEqual([]);
    await bus.close();
  });
});

describe('default group', () => {
  it('is the pattern: subscriptions to different patterns without a group never share a queue', async () => {
    const bus = createBus({ transport: memoryTransport() });
    const orders: string[] = [];
    const users: string[] = [];
    await bus.subscribe<{ t: string }>('orders.*', (d) => void orders.push(d.data.t));
    await bus.subscribe<{ t: string }>('users.*', (d) => void users.push(d.data.t));
    await bus.publishBatch(Array.from({ length: 6 }, () => ({ topic: 'users.created', data: { t: 'u' } })));
    await bus.publish('orders.created', { t: 'o' });
    for (let i = 0; i < 200 && users.length + orders.length < 7; i++) await new Promise((r) => setTimeout(r, 5));
    expect(users).toEqual(['u', 'u', 'u', 'u', 'u', 'u']);
    expect(orders).toEqual(['o']);
    await bus.close();
  });
});

describe('bus lifecycle', () => {
  it('a subscription whose transport closed underneath stops and releases, and bus.close still resolves', async () => {
    const transport = memoryTransport();
    const bus = createBus({ transport, ownsTransport: false });
    const sub = await bus.subscribe('life.x', () => {});
    await transport.close();
    await sub.close();
    await bus.close();
    expect(sub.inFlight).toBe(0);
  });
});

describe('consume loop', () => {
  it('lets timers run while handlers drain a large backlog synchronously', async () => {
    const bus = createBus({ transport: memoryTransport() });
    const topic = 'loop.backlog';
    await (await bus.subscribe(topic, () => {}, { group: 'g' })).close();
    const total = 20_000;
    for (let i = 0; i < total; i += 1000) {
      await bus.publishBatch(Array.from({ length: 1000 }, (_, j) => ({ topic, data: i + j })));
    }
    let handled = 0;
    let handledWhenTimerFired = -1;
    const all = new Promise<void>((resolve) => {
      void bus.subscribe(
        topic,
        () => {
          if (++handled === total) resolve();
        },
        { group: 'g', concurrency: 16 },
      );
    });
    setTimeout(() => {
      handledWhenTimerFired = handled;
    }, 0);
    await all;
    // Without yielding, the whole backlog would be handled in microtasks before the timer.
    expect(handledWhenTimerFired).toBeGreaterThanOrEqual(0);
    expect(handledWhenTimerFired).toBeLessThan(total);
    await bus.close();
  });
});

/**
 * A memory transport whose acks are held until `open()`: stands for a backend that confirms
 * settles after a round trip (Redis, AMQP), so the test can watch what waits for that.
 */
function slowAckTransport(): { transport: Transport; acked: string[]; open: () => void } {
  const inner = memoryTransport();
  const acked: string[] = [];
  let open!: () => void;
  const gate = new Promise<void>((r) => {
    open = r;
  });
  const held = (d: RawDelivery): RawDelivery => ({
    message: d.message,
    group: d.group,
    attempt: d.attempt,
    get settled() {
      return d.settled;
    },
    ack: async () => {
      await gate;
      await d.ack();
      acked.push(d.message.id);
    },
    nack: (o) => d.nack(o),
    deadLetter: (r, o) => d.deadLetter(r, o),
    extend: (ms) => d.extend(ms),
  });
  const transport: Transport = {
    name: 'slow-ack',
    capabilities: inner.capabilities,
    deadLetters: inner.deadLetters,
    connect: () => inner.connect(),
    publish: (b) => inner.publish(b),
    health: () => inner.health(),
    close: () => inner.close(),
    async subscribe(pattern, options) {
      const sub = await inner.subscribe(pattern, options);
      const it = sub[Symbol.asyncIterator]();
      const wrapped: Subscription = {
        get closed() {
          return sub.closed;
        },
        close: () => sub.close(),
        [Symbol.asyncDispose]: () => sub.close(),
        [Symbol.asyncIterator]: () => ({
          next: async () => {
            const r = await it.next();
            return r.done ? r : { done: false, value: held(r.value) };
          },
        }),
      };
      return wrapped;
    },
  };
  return { transport, acked, open };
}

describe('settles', () => {
  it('free the handler slot once issued, and close waits until the transport confirmed them', async () => {
    const { transport, acked, open } = slowAckTransport();
    const bus = createBus({ transport });
    const topic = 'settle.slow';
    await (await bus.subscribe(topic, () => {}, { group: 'g' })).close();
    await bus.publishBatch([
      { topic, data: 1 },
      { topic, data: 2 },
    ]);
    const seen: unknown[] = [];
    let second!: () => void;
    const bothRan = new Promise<void>((r) => {
      second = r;
    });
    const sub = await bus.subscribe(
      topic,
      (d) => {
        seen.push(d.data);
        if (seen.length === 2) second();
      },
      { group: 'g', concurrency: 1, prefetch: 2 },
    );
    // With the slot held until the first ack is confirmed, the second handler would never run.
    await bothRan;
    expect(seen).toEqual([1, 2]);
    expect(acked).toEqual([]);
    let closed = false;
    const closing = sub.close().then(() => {
      closed = true;
    });
    await new Promise((r) => setTimeout(r, 50));
    expect(closed).toBe(false);
    open();
    await closing;
    expect(acked).toHaveLength(2);
    await bus.close();
  });
});
