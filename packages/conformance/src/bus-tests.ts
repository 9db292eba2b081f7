import {
  ClosedError,
  createBus,
  type Delivery,
  PayloadTooLargeError,
  type Transport,
  UnrecoverableError,
  ValidationError,
} from '@agentbus/core';
import { expect } from 'vitest';
import { startConsumerChild } from './child-process.js';
import type { ConformanceOptions, TestContext } from './context.js';
import { Reader, until } from './wait.js';

type Test = (name: string, fn: (c: TestContext) => Promise<void>, timeoutMs?: number) => void;

const quiet = { logger: { debug() {}, info() {}, warn() {}, error() {} } };

/** Behaviour of the Bus (handlers, retries, middleware points, close) on top of the transport. */
export function busTests(options: ConformanceOptions, test: Test): void {
  const busOn = (t: Transport) => createBus({ transport: t, ownsTransport: false, ...quiet });

  test('round-trips an envelope with every attribute', async (c) => {
    const t = await c.open();
    const bus = busOn(t);
    const topic = c.topic('env');
    const got: Delivery[] = [];
    await bus.subscribe(topic, (d) => void got.push(d), { group: c.group() });
    const sent = await bus.publish(
      topic,
      { text: 'héllo', n: 1.5, list: [1, null, { deep: true }] },
      {
        source: 'agent://planner',
        type: 'task.assigned',
        correlationid: 'corr-1',
        causationid: 'cause-1',
        workflowid: 'wf-1',
        sequence: 3,
        priority: 6,
        ttlMs: 3_600_000,
        replyto: 'replies.planner',
        traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
        schemaversion: '2',
        headers: { tenant: 'acme' },
      },
    );
    await until(() => got.length === 1);
    expect(got[0]!.envelope).toEqual(sent);
    expect(got[0]!.attempt).toBe(1);
    expect(got[0]!.transportHeaders.traceparent).toBe(sent.traceparent);
    expect(got[0]!.digest()).toMatch(/^sha256:[0-9a-f]{64}$/);
    await bus.close();
  });

  test('a handler running longer than the ack timeout keeps its lease and is not redelivered', async (c) => {
    const t = await c.open();
    const bus = busOn(t);
    const topic = c.topic('slow');
    const group = c.group();
    const calls: number[] = [];
    let finished = false;
    const handler = async (d: Delivery) => {
      calls.push(d.attempt);
      await until(() => false, c.ackTimeoutMs * 4).catch(() => {});
      finished = true;
    };
    await bus.subscribe(topic, handler, { group, ackTimeoutMs: c.ackTimeoutMs });
    await bus.subscribe(topic, handler, { group, ackTimeoutMs: c.ackTimeoutMs });
    await bus.publish(topic, { slow: true });
    await until(() => finished, 20_000, 'the slow handler');
    const r = new Reader(await t.subscribe(topic, { group, prefetch: 1, ackTimeoutMs: c.ackTimeoutMs }));
    await r.expectNothing(c.ackTimeoutMs * 2);
    expect(calls).toEqual([1]);
    await bus.close();
  });

  test('deliveries prefetched ahead of a slow handler keep their leases and are not redelivered elsewhere', async (c) => {
    const t = await c.open();
    const bus = busOn(t);
    const topic = c.topic('prefetched');
    const group = c.group();
    const handled: string[] = [];
    const slow = (who: string) => async (d: Delivery) => {
      handled.push(`${who}:${d.envelope.id}:${d.attempt}`);
      await until(() => false, c.ackTimeoutMs * 1.5).catch(() => {});
    };
    await bus.subscribe(topic, slow('a'), { group, concurrency: 1, prefetch: 3, ackTimeoutMs: c.ackTimeoutMs });
    const envs = await bus.publishBatch([1, 2, 3].map((i) => ({ topic, data: { i } })));
    await until(() => handled.length === 1, 10_000, 'the first handler');
    await bus.subscribe(topic, slow('b'), { group, concurrency: 1, ackTimeoutMs: c.ackTimeoutMs });
    await until(() => handled.length >= 3, 20_000, 'three handlers');
    await bus.close();
    expect(handled.map((h) => h.split(':')[2])).toEqual(['1', '1', '1']);
    expect(new Set(handled.map((h) => h.split(':')[1]))).toEqual(new Set(envs.map((e) => e.id)));
  });

  test('retries a failing handler with backoff, then dead-letters after maxAttempts with the original topic', async (c) => {
    const t = await c.open();
    const bus = busOn(t);
    const topic = c.topic('retry');
    const group = c.group();
    const attempts: number[] = [];
    const times: number[] = [];
    await bus.subscribe(
      topic,
      (d) => {
        attempts.push(d.attempt);
        times.push(Date.now());
        throw new Error(`model call failed on attempt ${d.attempt}`);
      },
      { group, maxAttempts: 3, backoff: { initialDelayMs: 100, factor: 2, maxDelayMs: 1000, jitter: 'none' } },
    );
    const env = await bus.publish(topic, { poison: false });
    await until(async () => (await t.deadLetters.list({ group })).length === 1, 20_000, 'dead letter');
    expect(attempts).toEqual([1, 2, 3]);
    expect(times[1]! - times[0]!).toBeGreaterThanOrEqual(95);
    expect(times[2]! - times[1]!).toBeGreaterThanOrEqual(195);
    const [dead] = await t.deadLetters.list({ group });
    expect(dead).toMatchObject({ reason: 'max-attempts', attempts: 3, group });
    expect(dead!.message.topic).toBe(topic);
    expect(dead!.message.id).toBe(env.id);
    expect(dead!.error).toContain('model call failed on attempt 3');
    await bus.close();
  });

  test('a handler sees why its previous attempt failed as delivery.lastError', async (c) => {
    const t = await c.open();
    const bus = busOn(t);
    const topic = c.topic('lasterror');
    const seen: { attempt: number; lastError: string | undefined }[] = [];
    await bus.subscribe(
      topic,
      (d) => {
        seen.push({ attempt: d.attempt, lastError: d.lastError });
        if (d.attempt === 1) throw new Error('model call failed: context too long');
      },
      { group: c.group(), backoff: { initialDelayMs: 50, factor: 2, maxDelayMs: 1000, jitter: 'none' } },
    );
    await bus.publish(topic, { task: 1 });
    await until(() => seen.length === 2, 20_000, 'the retry');
    expect(seen[0]).toEqual({ attempt: 1, lastError: undefined });
    expect(seen[1]!.attempt).toBe(2);
    expect(seen[1]!.lastError).toContain('model call failed: context too long');
    await bus.close();
  });

  test('dead-letters at once when the handler throws UnrecoverableError, and a replay is handled again', async (c) => {
    const t = await c.open();
    const bus = busOn(t);
    const topic = c.topic('unrecoverable');
    const group = c.group();
    const seen: number[] = [];
    let fixed = false;
    await bus.subscribe(
      topic,
      (d) => {
        seen.push(d.attempt);
        if (!fixed) throw new UnrecoverableError('bad task');
      },
      { group },
    );
    await bus.publish(topic, { task: 1 });
    await until(async () => (await t.deadLetters.list({ group })).length === 1);
    const [dead] = await t.deadLetters.list({ group });
    expect(dead!.reason).toBe('unrecoverable');
    expect(dead!.error).toContain('bad task');
    fixed = true;
    expect(await t.deadLetters.replay({ group })).toBe(1);
    await until(() => seen.length === 2);
    expect(await t.deadLetters.list({ group })).toHaveLength(0);
    await bus.close();
  });

  test('runs at most `concurrency` handlers at once', async (c) => {
    const t = await c.open();
    const bus = busOn(t);
    const topic = c.topic('conc');
    let running = 0;
    let peak = 0;
    let done = 0;
    await bus.subscribe(
      topic,
      async () => {
        running++;
        peak = Math.max(peak, running);
        await new Promise((r) => setTimeout(r, 20));
        running--;
        done++;
      },
      { group: c.group(), concurrency: 3 },
    );
    await bus.publishBatch(Array.from({ length: 15 }, (_, i) => ({ topic, data: { i } })));
    await until(() => done === 15);
    expect(peak).toBe(3);
    await bus.close();
  });

  test('publishBatch delivers all, and a batch with one bad message publishes none', async (c) => {
    const t = await c.open();
    const bus = busOn(t);
    const topic = c.topic('pbatch');
    const got: number[] = [];
    await bus.subscribe<{ i: number }>(topic, (d) => void got.push(d.data.i), { group: c.group(), concurrency: 4 });
    const envs = await bus.publishBatch(Array.from({ length: 20 }, (_, i) => ({ topic, data: { i } })));
    expect(envs).toHaveLength(20);
    await until(() => got.length === 20);
    await expect(
      bus.publishBatch([
        { topic, data: { i: 100 } },
        { topic: 'bad..topic', data: { i: 101 } },
      ]),
    ).rejects.toBeInstanceOf(ValidationError);
    await expect(bus.publish(topic, { i: 102 }, { priority: 12 })).rejects.toBeInstanceOf(ValidationError);
    await bus.publish(topic, { i: 103 });
    await until(() => got.includes(103));
    expect(got).not.toContain(100);
    await bus.close();
  });

  test('refuses a payload over maxPayloadBytes with PayloadTooLargeError and sends nothing, alone or in a batch', async (c) => {
    const t = await c.open();
    const bus = createBus({ transport: t, ownsTransport: false, maxPayloadBytes: 2048, ...quiet });
    const topic = c.topic('big');
    const group = c.group();
    const r = new Reader(await t.subscribe(topic, { group, prefetch: 5, ackTimeoutMs: c.ackTimeoutMs }));
    const err = await bus.publish(topic, { blob: 'x'.repeat(4096) }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PayloadTooLargeError);
    expect((err as PayloadTooLargeError).code).toBe('PAYLOAD_TOO_LARGE');
    // In a batch, one message over the limit refuses the whole batch.
    const batchErr = await bus
      .publishBatch([
        { topic, data: { ok: 1 } },
        { topic, data: { blob: 'x'.repeat(4096) } },
      ])
      .catch((e: unknown) => e);
    expect(batchErr).toBeInstanceOf(PayloadTooLargeError);
    await bus.publish(topic, { small: true });
    const d = await r.expect();
    expect(JSON.parse(Buffer.from(d.message.body).toString()).data).toEqual({ small: true });
    await d.ack();
    await r.expectNothing(100);
    await bus.close();
  });

  test('an undecodable message goes to the dead-letter store with reason decode and the next one is handled', async (c) => {
    const t = await c.open();
    const bus = busOn(t);
    const topic = c.topic('garbage');
    const group = c.group();
    const got: unknown[] = [];
    await bus.subscribe(topic, (d) => void got.push(d.data), { group });
    await t.publish([c.message(topic, { body: Buffer.from('{not json') })]);
    await t.publish([c.message(topic, { body: Buffer.from(JSON.stringify({ specversion: '1.0', id: 'x' })) })]);
    await bus.publish(topic, { fine: true });
    await until(() => got.length === 1);
    await until(async () => (await t.deadLetters.list({ group })).length === 2);
    const dead = await t.deadLetters.list({ group });
    expect(dead.map((d) => d.reason)).toEqual(['decode', 'decode']);
    expect(dead[0]!.error).toContain('SERIALIZATION');
    expect(dead[1]!.error).toContain('VALIDATION');
    expect(got).toEqual([{ fine: true }]);
    await bus.close();
  });

  test('close is idempotent, drains running handlers, and publish after close rejects with ClosedError', async (c) => {
    const t = await c.open();
    const bus = busOn(t);
    const topic = c.topic('drain');
    const group = c.group();
    let started = false;
    let finished = false;
    await bus.subscribe(
      topic,
      async () => {
        started = true;
        await new Promise((r) => setTimeout(r, 300));
        finished = true;
      },
      { group },
    );
    await bus.publish(topic, { work: 1 });
    await until(() => started);
    const closing = bus.close();
    expect(bus.close()).toBe(closing);
    await closing;
    expect(finished).toBe(true);
    await expect(bus.publish(topic, { late: true })).rejects.toBeInstanceOf(ClosedError);
    await expect(bus.subscribe(topic, () => {}, { group })).rejects.toBeInstanceOf(ClosedError);
    // The drained handler's message was acked: nothing is left for the group.
    const r = new Reader(await t.subscribe(topic, { group, prefetch: 1, ackTimeoutMs: c.ackTimeoutMs }));
    await r.expectNothing(c.ackTimeoutMs * 2);
  });

  if (options.childModule) {
    const childModule = options.childModule;
    test('a message held by a consumer process that is SIGKILLed is redelivered with attempt + 1', async (c) => {
      const t = await c.open();
      const topic = c.topic('kill');
      const group = c.group();
      const child = startConsumerChild({
        module: childModule,
        arg: options.childArg ?? '',
        pattern: topic,
        group,
        ackTimeoutMs: c.ackTimeoutMs,
        prefetch: 1,
        mode: 'hold',
      });
      try {
        await until(() => child.lines.some((l) => l.ready), 20_000, 'child ready');
        const m = c.message(topic);
        await t.publish([m]);
        await until(() => child.lines.some((l) => l.id === m.id), 10_000, 'child delivery');
        await child.kill();
        const r = new Reader(await t.subscribe(topic, { group, prefetch: 1, ackTimeoutMs: c.ackTimeoutMs }));
        const d = await r.expect(c.ackTimeoutMs * 20);
        expect(d.message.id).toBe(m.id);
        expect(d.attempt).toBe(2);
        await d.ack();
      } finally {
        await child.kill();
      }
    }, 60_000);
  }
}
