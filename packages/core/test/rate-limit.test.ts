import { until } from '@agentbus/conformance';
import {
  type Bus,
  ConfigError,
  createBus,
  type Envelope,
  errorFromWire,
  fanOutCap,
  ManualClock,
  memoryRateLimiter,
  memoryTransport,
  type NackOptions,
  RATE_LIMIT_DEFAULTS,
  RateLimitedError,
  type RateLimiter,
  rateLimit,
  type TakeResult,
  UnrecoverableError,
  ValidationError,
} from '@agentbus/core';
import { describe, expect, it } from 'vitest';

/** Records what passed the publish middleware before it (it is added after them). */
function sentSpy(bus: Bus): string[] {
  const sent: string[] = [];
  bus.use({
    name: 'sent',
    async publish(ctx, next) {
      sent.push(`${ctx.envelope.source}:${JSON.stringify(ctx.envelope.data)}`);
      await next();
    },
  });
  return sent;
}

/** Records every take result of a limiter (our own interface, wrapped, not mocked). */
function observed(limiter: RateLimiter): { limiter: RateLimiter; results: TakeResult[] } {
  const results: TakeResult[] = [];
  return {
    results,
    limiter: {
      async take(key, request) {
        const r = await limiter.take(key, request);
        results.push(r);
        return r;
      },
    },
  };
}

async function refusal(p: Promise<unknown>): Promise<RateLimitedError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(RateLimitedError);
  return err as RateLimitedError;
}

describe('rate limit on publish', () => {
  it('rejects a publish over the budget with RateLimitedError and retryAfterMs, and sends nothing', async () => {
    const clock = new ManualClock();
    const bus = createBus({ transport: memoryTransport(), clock });
    bus.use(rateLimit({ capacity: 2, refillPerSecond: 0.5, on: 'publish', clock }));
    const sent = sentSpy(bus);
    await bus.publish('rl.pub', 1, { source: 'planner' });
    await bus.publish('rl.pub', 2, { source: 'planner' });
    const err = await refusal(bus.publish('rl.pub', 3, { source: 'planner' }));
    expect(err.code).toBe('RATE_LIMITED');
    expect(err.retryable).toBe(true);
    expect(err.retryAfterMs).toBe(2_000); // one token at 0.5 per second
    expect(err.data).toEqual({ key: 'agent:planner', side: 'publish', retryAfterMs: 2_000 });
    expect(sent).toEqual(['planner:1', 'planner:2']);
    // Another agent has a budget of its own.
    await bus.publish('rl.pub', 4, { source: 'writer' });
    clock.advance(2_000);
    await bus.publish('rl.pub', 5, { source: 'planner' });
    expect(sent).toEqual(['planner:1', 'planner:2', 'writer:4', 'planner:5']);
    await bus.close();
  });

  it('keys buckets by topic, by tenant header (absent: one shared bucket) or by a function (undefined: unlimited)', async () => {
    const clock = new ManualClock();
    const shape = { capacity: 1, refillPerSecond: 1, on: 'publish', clock } as const;
    const bus = createBus({ transport: memoryTransport(), clock });
    bus.use(rateLimit({ ...shape, name: 'by-topic', key: 'topic' }));
    bus.use(rateLimit({ ...shape, name: 'by-tenant', key: 'tenant', tenantHeader: 'x-tenant' }));
    bus.use(
      rateLimit({ ...shape, name: 'by-fn', key: (e) => (e.data === 'vip' ? undefined : `kind:${typeof e.data}`) }),
    );
    const t = (tenant: string) => ({ headers: { 'x-tenant': tenant } });
    await bus.publish('rl.a', 'x', t('acme'));
    // Same topic: refused by the topic limiter.
    expect((await refusal(bus.publish('rl.a', 'y', t('globex')))).data).toMatchObject({ key: 'topic:rl.a' });
    // Other topic, same tenant: refused by the tenant limiter.
    expect((await refusal(bus.publish('rl.b', 'x', t('acme')))).data).toMatchObject({ key: 'tenant:acme' });
    // Other topic, other tenant, but another string: refused by the function's key.
    expect((await refusal(bus.publish('rl.c', 'x', t('globex')))).data).toMatchObject({ key: 'kind:string' });
    // The function exempts vip messages; tenants without the header share one bucket.
    await bus.publish('rl.d', 'vip', t('initech'));
    await bus.publish('rl.e', 'vip');
    expect((await refusal(bus.publish('rl.f', 'vip'))).data).toMatchObject({ key: 'tenant:' });
    await bus.close();
  });

  it('charges a message its cost (e.g. the LLM tokens it will spend) and refuses a cost no bucket could grant', async () => {
    const clock = new ManualClock();
    const bus = createBus({ transport: memoryTransport(), clock });
    bus.use(
      rateLimit({
        capacity: 10_000,
        refillPerSecond: 1_000,
        on: 'publish',
        cost: (e: Envelope) => (e.data as { tokens: number }).tokens,
        clock,
      }),
    );
    const sent = sentSpy(bus);
    await bus.publish('rl.llm', { tokens: 7_000 });
    const err = await refusal(bus.publish('rl.llm', { tokens: 4_000 }));
    expect(err.retryAfterMs).toBe(1_000); // 1,000 more tokens needed at 1,000 per second
    await bus.publish('rl.llm', { tokens: 3_000 });
    await expect(bus.publish('rl.llm', { tokens: 10_001 })).rejects.toBeInstanceOf(ValidationError);
    await expect(bus.publish('rl.llm', { tokens: -1 })).rejects.toBeInstanceOf(ValidationError);
    expect(sent.length).toBe(2);
    await bus.close();
  });

  it('reserves capacity for high priorities: lower ones may not take it, the highest may take the whole bucket', async () => {
    const clock = new ManualClock();
    const bus = createBus({ transport: memoryTransport(), clock });
    bus.use(
      rateLimit({
        capacity: 10,
        refillPerSecond: 1,
        on: 'publish',
        priorityClasses: [
          { minPriority: 8, reservedShare: 0.2 },
          { minPriority: 6, reservedShare: 0.3 },
        ],
        clock,
      }),
    );
    const allowed = async (priority: number) =>
      bus.publish('rl.prio', priority, { priority }).then(
        () => true,
        (e: unknown) => {
          if (!(e instanceof RateLimitedError)) throw e;
          return false;
        },
      );
    const results: boolean[] = [];
    for (let i = 0; i < 6; i++) results.push(await allowed(4)); // 5 of 10 are reserved for 6 and up
    expect(results).toEqual([true, true, true, true, true, false]);
    expect([await allowed(6), await allowed(6), await allowed(6), await allowed(6)]).toEqual([true, true, true, false]);
    expect([await allowed(9), await allowed(8), await allowed(9)]).toEqual([true, true, false]);
    // The refusal of a low priority counts the time to refill the reserve too.
    expect((await refusal(bus.publish('rl.prio', 0, { priority: 0 }))).retryAfterMs).toBe(6_000);
    await bus.close();
  });

  it('waits up to maxWaitMs for tokens before refusing a publish', async () => {
    const clock = new ManualClock();
    const { limiter, results } = observed(memoryRateLimiter({ clock }));
    const bus = createBus({ transport: memoryTransport(), clock });
    bus.use(rateLimit({ capacity: 1, refillPerSecond: 50, on: 'publish', maxWaitMs: 60_000, limiter, clock }));
    await bus.publish('rl.wait', 1);
    const second = bus.publish('rl.wait', 2);
    await until(() => results.length === 2, 5_000, 'the second publish to be refused once');
    expect(results[1]).toMatchObject({ allowed: false, retryAfterMs: 20 });
    clock.advance(20); // the token it waits for
    await second;
    expect(results.at(-1)?.allowed).toBe(true);
    // With a wait shorter than the refill, it is refused at once.
    const impatient = createBus({ transport: memoryTransport(), clock });
    impatient.use(rateLimit({ capacity: 1, refillPerSecond: 50, on: 'publish', maxWaitMs: 19, clock }));
    await impatient.publish('rl.wait', 1);
    expect((await refusal(impatient.publish('rl.wait', 2))).retryAfterMs).toBe(20);
    await bus.close();
    await impatient.close();
  });
});

describe('rate limit on consume', () => {
  it('puts a delivery over the budget back with nack(retryAfterMs) without running the handler, and handles it once tokens refill', async () => {
    const clock = new ManualClock();
    const transport = memoryTransport();
    const bus = createBus({ transport, clock });
    const nacks: NackOptions[] = [];
    bus.use({
      name: 'nack-spy',
      async consume(ctx, next) {
        const nack = ctx.delivery.nack.bind(ctx.delivery);
        ctx.delivery.nack = (o?: NackOptions) => {
          nacks.push(o ?? {});
          return nack(o);
        };
        await next();
      },
    });
    bus.use(rateLimit({ capacity: 2, refillPerSecond: 100, on: 'consume', clock }));
    const handled: { n: number; attempt: number }[] = [];
    await bus.subscribe<number>('rl.con', (d) => void handled.push({ n: d.data, attempt: d.attempt }), {
      group: 'g',
      maxAttempts: 1_000,
    });
    for (let n = 1; n <= 3; n++) await bus.publish('rl.con', n);
    await until(() => handled.length === 2 && nacks.length >= 2, 5_000, 'two handled and the third put back twice');
    expect(handled.map((h) => h.n)).toEqual([1, 2]); // the clock stands still: no token, no handler run
    expect(nacks[0]).toEqual({ delayMs: 10, error: expect.stringMatching(/^RATE_LIMITED: rate limit of agent:/) });
    clock.advance(10);
    await until(() => handled.length === 3, 5_000, 'the third handled after the refill');
    expect(handled[2]?.n).toBe(3);
    expect(handled[2]?.attempt).toBe(nacks.length + 1); // every put-back counted an attempt
    expect(await transport.deadLetters.list()).toEqual([]);
    await bus.close();
  });

  it('keeps separate publish and consume budgets when limiting both sides', async () => {
    const clock = new ManualClock();
    const bus = createBus({ transport: memoryTransport(), clock });
    bus.use(rateLimit({ capacity: 2, refillPerSecond: 1, clock }));
    const handled: number[] = [];
    await bus.subscribe<number>('rl.both', (d) => void handled.push(d.data), { group: 'g' });
    await bus.publish('rl.both', 1);
    await bus.publish('rl.both', 2);
    await refusal(bus.publish('rl.both', 3));
    await until(() => handled.length === 2, 5_000, 'both published messages handled');
    await bus.close();
  });

  it('waits up to maxWaitMs instead of putting the delivery back (no attempt spent), without blocking other keys', async () => {
    const clock = new ManualClock();
    const { limiter, results } = observed(memoryRateLimiter({ clock }));
    const bus = createBus({ transport: memoryTransport(), clock });
    bus.use(rateLimit({ capacity: 1, refillPerSecond: 40, on: 'consume', maxWaitMs: 60_000, limiter, clock }));
    const handled: string[] = [];
    await bus.subscribe('rl.waitc', (d) => void handled.push(`${d.envelope.source}${d.data}@${d.attempt}`), {
      group: 'g',
      concurrency: 1,
      prefetch: 4,
    });
    await bus.publish('rl.waitc', 1, { source: 'a' });
    await bus.publish('rl.waitc', 2, { source: 'a' });
    await bus.publish('rl.waitc', 1, { source: 'b' });
    // a2 waits for a token; its slot went to b1 meanwhile (concurrency 1).
    await until(() => results.some((r) => !r.allowed) && handled.length === 2, 5_000, 'a2 waiting and b1 handled');
    expect(handled).toEqual(['a1@1', 'b1@1']);
    clock.advance(25);
    await until(() => handled.length === 3, 5_000, 'a2 handled after its wait');
    expect(handled[2]).toBe('a2@1');
    await bus.close();
  });

  it('never dead-letters for a rate limit: the last attempt waits for its tokens instead of being put back', async () => {
    const clock = new ManualClock();
    const transport = memoryTransport();
    const { limiter, results } = observed(memoryRateLimiter({ clock }));
    const bus = createBus({ transport, clock });
    bus.use(rateLimit({ capacity: 1, refillPerSecond: 100, on: 'consume', limiter, clock }));
    const attempts: number[] = [];
    await bus.subscribe('rl.last', (d) => void attempts.push(d.attempt), { group: 'g', maxAttempts: 2 });
    await bus.publish('rl.last', 1);
    await bus.publish('rl.last', 2);
    // The second is put back once (attempt 1), then waits on attempt 2 however long it takes.
    await until(() => results.filter((r) => !r.allowed).length >= 4, 5_000, 'the last attempt waiting');
    expect(attempts).toEqual([1]);
    clock.advance(10);
    await until(() => attempts.length === 2, 5_000, 'the second handled on its last attempt');
    expect(attempts).toEqual([1, 2]);
    expect(await transport.deadLetters.list()).toEqual([]);
    await bus.close();
  });

  it('puts a waiting delivery back when its subscription closes', async () => {
    const clock = new ManualClock();
    const transport = memoryTransport();
    const { limiter, results } = observed(memoryRateLimiter({ clock }));
    const bus = createBus({ transport, clock });
    bus.use(rateLimit({ capacity: 1, refillPerSecond: 1, on: 'consume', maxWaitMs: 3_600_000, limiter, clock }));
    const handled: number[] = [];
    const sub = await bus.subscribe<number>('rl.closing', (d) => void handled.push(d.data), { group: 'g' });
    await bus.publish('rl.closing', 1);
    await bus.publish('rl.closing', 2);
    await until(() => results.some((r) => !r.allowed), 5_000, 'the second waiting');
    await sub.close(); // does not wait the hour
    expect(handled).toEqual([1]);
    clock.advance(1_000);
    const again: { n: number; attempt: number }[] = [];
    await bus.subscribe<number>('rl.closing', (d) => void again.push({ n: d.data, attempt: d.attempt }), {
      group: 'g',
    });
    await until(() => again.length === 1, 5_000, 'the put-back delivery handled by the next subscriber');
    expect(again[0]?.n).toBe(2);
    await bus.close();
  });

  it('dead-letters a delivery whose cost no bucket could grant, as validation', async () => {
    const transport = memoryTransport();
    const bus = createBus({ transport });
    bus.use(rateLimit({ capacity: 5, refillPerSecond: 1, on: 'consume', cost: (e) => e.data as number }));
    let runs = 0;
    await bus.subscribe('rl.big', () => void runs++, { group: 'g' });
    await bus.publish('rl.big', 6);
    await until(async () => (await transport.deadLetters.list()).length === 1, 5_000, 'the dead letter');
    const [dead] = await transport.deadLetters.list();
    expect(dead?.reason).toBe('validation');
    expect(dead?.error).toMatch(/cost 6 can never be taken/);
    expect(runs).toBe(0);
    await bus.close();
  });
});

describe('adaptive rate (AIMD)', () => {
  it('cuts the rate on errors and on latency, grows it back while healthy, within its bounds', async () => {
    const clock = new ManualClock();
    const changes: [number, number][] = [];
    const mw = rateLimit({
      capacity: 1_000,
      refillPerSecond: 100,
      cost: (e) => (e.data as { cost?: number }).cost ?? 1,
      adaptive: {
        minRefillPerSecond: 20,
        maxRefillPerSecond: 130,
        increaseBy: 10,
        decreaseFactor: 0.5,
        maxErrorRate: 0.2,
        maxLatencyMs: 500,
        windowMs: 1_000,
        minimumCalls: 5,
        onRateChange: (rate, previous) => changes.push([rate, previous]),
      },
      clock,
    });
    const transport = memoryTransport();
    const bus = createBus({ transport, clock });
    bus.use(mw);
    let done = 0;
    await bus.subscribe<{ kind: string }>(
      'ad.work',
      (d) => {
        done++;
        if (d.data.kind === 'fail') throw new Error('503 from the model API');
        if (d.data.kind === 'bad') throw new UnrecoverableError('not the dependency’s fault');
        if (d.data.kind === 'slow') clock.advance(600);
      },
      { group: 'g', maxAttempts: 1 },
    );
    const handle = async (kind: string, times = 1) => {
      for (let i = 0; i < times; i++) {
        const target = done + 1;
        await bus.publish('ad.work', { kind }, { source: `worker-${kind}` });
        await until(() => done === target, 5_000, `a ${kind} call handled`);
      }
    };
    expect(mw.currentRate()).toBe(100);
    await handle('fail', 5);
    expect(mw.currentRate()).toBe(100); // the window is not over yet
    clock.advance(1_000);
    await handle('ok');
    expect(mw.currentRate()).toBe(50); // 5 of 6 failed
    // The rate is in force: a drained bucket refills at 50 per second.
    await bus.publish('ad.probe', { cost: 1_000 }, { source: 'probe' });
    expect((await refusal(bus.publish('ad.probe', {}, { source: 'probe' }))).retryAfterMs).toBe(20);
    await handle('slow', 5); // each takes 600 ms, so the window closes on the fifth
    expect(mw.currentRate()).toBe(25);
    await handle('ok', 5);
    clock.advance(1_000);
    await handle('ok');
    expect(mw.currentRate()).toBe(35); // healthy: +10
    // Unrecoverable errors are the message's fault, not the dependency's: not failures.
    await handle('bad', 5);
    clock.advance(1_000);
    await handle('ok');
    expect(mw.currentRate()).toBe(45);
    for (let w = 0; w < 3; w++) {
      await handle('fail', 5);
      clock.advance(1_000);
      await handle('fail');
    }
    expect(mw.currentRate()).toBe(20); // 45 → 22.5 → 20 (the floor) → 20
    for (let w = 0; w < 12; w++) {
      await handle('ok', 5);
      clock.advance(1_000);
      await handle('ok');
    }
    expect(mw.currentRate()).toBe(130); // the ceiling
    expect(changes.slice(0, 4)).toEqual([
      [50, 100],
      [25, 50],
      [35, 25],
      [45, 35],
    ]);
    expect(changes.every(([rate, prev]) => rate !== prev)).toBe(true);
    await bus.close();
  });

  it('decides nothing on a quiet window: it waits for minimumCalls', async () => {
    const clock = new ManualClock();
    const mw = rateLimit({ capacity: 10, refillPerSecond: 10, on: 'consume', adaptive: true, clock });
    const bus = createBus({ transport: memoryTransport(), clock });
    bus.use(mw);
    let done = 0;
    await bus.subscribe(
      'ad.quiet',
      () => {
        done++;
        throw new Error('down');
      },
      { group: 'g', maxAttempts: 1 },
    );
    for (let i = 0; i < RATE_LIMIT_DEFAULTS.adaptive.minimumCalls - 1; i++) {
      clock.advance(1_000);
      await bus.publish('ad.quiet', i);
      await until(() => done === i + 1, 5_000, 'the call');
    }
    expect(mw.currentRate()).toBe(10);
    clock.advance(1_000);
    await bus.publish('ad.quiet', 'last');
    await until(() => mw.currentRate() === 5, 5_000, 'the cut once the window holds enough calls');
    await bus.close();
  });
});

describe('fan-out cap', () => {
  it('caps what one workflow publishes per window; other workflows and unrelated messages are not affected', async () => {
    const clock = new ManualClock();
    const bus = createBus({ transport: memoryTransport(), clock });
    bus.use(fanOutCap({ maxPublishes: 3, windowMs: 60_000, clock }));
    const sent = sentSpy(bus);
    for (let i = 0; i < 3; i++) await bus.publish('wf.step', i, { workflowid: 'runaway' });
    const err = await refusal(bus.publish('wf.step', 3, { workflowid: 'runaway' }));
    expect(err.retryAfterMs).toBe(20_000); // a window's worth of 3: one every 20 s
    expect(err.data).toEqual({ workflowid: 'runaway', maxPublishes: 3, windowMs: 60_000, retryAfterMs: 20_000 });
    await bus.publish('wf.step', 'other', { workflowid: 'calm' });
    for (let i = 0; i < 10; i++) await bus.publish('wf.step', `free-${i}`);
    expect(sent.slice(0, 5)).toEqual([
      'agentbus:0',
      'agentbus:1',
      'agentbus:2',
      'agentbus:"other"',
      'agentbus:"free-0"',
    ]);
    expect(sent).toHaveLength(14);
    clock.advance(20_000);
    await bus.publish('wf.step', 4, { workflowid: 'runaway' });
    await refusal(bus.publish('wf.step', 5, { workflowid: 'runaway' }));
    await bus.close();
  });
});

describe('rate limit options and errors', () => {
  it('names the bad option in a ConfigError', () => {
    const ok = { capacity: 10, refillPerSecond: 1 };
    const path = (f: () => unknown) => {
      try {
        f();
      } catch (e) {
        expect(e).toBeInstanceOf(ConfigError);
        return (e as ConfigError).path;
      }
      throw new Error('no ConfigError');
    };
    expect(path(() => rateLimit({ ...ok, capacity: 0 }))).toBe('capacity');
    expect(path(() => rateLimit({ ...ok, refillPerSecond: Number.NaN }))).toBe('refillPerSecond');
    expect(path(() => rateLimit({ ...ok, on: 'sideways' as never }))).toBe('on');
    expect(path(() => rateLimit({ ...ok, key: 'team' as never }))).toBe('key');
    expect(path(() => rateLimit({ ...ok, key: 'tenant', tenantHeader: '' }))).toBe('tenantHeader');
    expect(path(() => rateLimit({ ...ok, cost: 11 }))).toBe('cost');
    expect(path(() => rateLimit({ ...ok, maxWaitMs: -1 }))).toBe('maxWaitMs');
    expect(path(() => rateLimit({ ...ok, limiter: {} as never }))).toBe('limiter');
    expect(path(() => rateLimit({ ...ok, name: '' }))).toBe('name');
    expect(path(() => rateLimit({ ...ok, priorityClasses: [{ minPriority: 0, reservedShare: 0.1 }] }))).toBe(
      'priorityClasses[0].minPriority',
    );
    expect(
      path(() =>
        rateLimit({
          ...ok,
          priorityClasses: [
            { minPriority: 7, reservedShare: 0.1 },
            { minPriority: 7, reservedShare: 0.1 },
          ],
        }),
      ),
    ).toBe('priorityClasses[1].minPriority');
    expect(path(() => rateLimit({ ...ok, priorityClasses: [{ minPriority: 7, reservedShare: 1 }] }))).toBe(
      'priorityClasses[0].reservedShare',
    );
    expect(
      path(() =>
        rateLimit({
          ...ok,
          priorityClasses: [
            { minPriority: 7, reservedShare: 0.5 },
            { minPriority: 5, reservedShare: 0.5 },
          ],
        }),
      ),
    ).toBe('priorityClasses');
    expect(path(() => rateLimit({ ...ok, adaptive: { decreaseFactor: 1 } }))).toBe('adaptive.decreaseFactor');
    expect(path(() => rateLimit({ ...ok, adaptive: { maxErrorRate: 1 } }))).toBe('adaptive.maxErrorRate');
    expect(path(() => rateLimit({ ...ok, adaptive: { minimumCalls: 0 } }))).toBe('adaptive.minimumCalls');
    expect(path(() => rateLimit({ ...ok, adaptive: { maxRefillPerSecond: 0.5 } }))).toBe('adaptive');
    expect(path(() => fanOutCap({ maxPublishes: 0, windowMs: 1 }))).toBe('maxPublishes');
    expect(path(() => fanOutCap({ maxPublishes: 1, windowMs: 0 }))).toBe('windowMs');
  });

  it('exports its defaults frozen', () => {
    expect(Object.isFrozen(RATE_LIMIT_DEFAULTS)).toBe(true);
    expect(Object.isFrozen(RATE_LIMIT_DEFAULTS.adaptive)).toBe(true);
    expect(RATE_LIMIT_DEFAULTS).toMatchObject({ key: 'agent', cost: 1, on: 'both', maxWaitMs: 0 });
  });

  it('RateLimitedError keeps retryAfterMs across the wire', () => {
    const err = new RateLimitedError('slow down', { retryAfterMs: 250, data: { key: 'agent:a' } });
    expect(err.data).toEqual({ key: 'agent:a', retryAfterMs: 250 });
    const back = errorFromWire(JSON.parse(JSON.stringify(err.toWire())));
    expect(back).toBeInstanceOf(RateLimitedError);
    expect((back as RateLimitedError).retryAfterMs).toBe(250);
    expect(back.retryable).toBe(true);
    expect(new RateLimitedError('no hint').retryAfterMs).toBeUndefined();
  });
});
