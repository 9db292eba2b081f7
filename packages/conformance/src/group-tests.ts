import type { GroupStats, Transport } from '@agentbus/core';
import { expect } from 'vitest';
import { startChild } from './child-process.js';
import type { ConformanceOptions, TestContext } from './context.js';
import { Reader, until } from './wait.js';

type Test = (name: string, fn: (c: TestContext) => Promise<void>, timeoutMs?: number) => void;

const ZERO: GroupStats = { backlog: 0, inFlight: 0 };

function sameStats(a: GroupStats, b: GroupStats): boolean {
  return a.backlog === b.backlog && a.inFlight === b.inFlight;
}

/**
 * Tests of the group lifecycle: ephemeral groups, `routeCount` and `groupStats`. A test of an
 * optional method runs only where the transport declares it (`options.methods`).
 */
export function groupTests(options: ConformanceOptions, test: Test): void {
  const hasRouteCount = options.methods?.routeCount === true;
  const hasGroupStats = options.methods?.groupStats === true;
  const routeCount = (t: Transport, topic: string) =>
    (t.routeCount as (topic: string) => Promise<number>).call(t, topic);
  const groupStats = (t: Transport, group: string) =>
    (t.groupStats as (group: string) => Promise<GroupStats>).call(t, group);
  const sub = async (c: TestContext, pattern: string, group: string, prefetch = 10, ephemeral = false) => {
    const t = await c.open();
    const s = await t.subscribe(pattern, { group, prefetch, ackTimeoutMs: c.ackTimeoutMs, ephemeral });
    return { t, r: new Reader(s) };
  };

  test('declares the optional methods (routeCount, groupStats) the suite was told about', async (c) => {
    const t = await c.open();
    expect({
      routeCount: typeof t.routeCount === 'function',
      groupStats: typeof t.groupStats === 'function',
    }).toEqual({ routeCount: hasRouteCount, groupStats: hasGroupStats });
  });

  test('an ephemeral group delivers, redelivers and dead-letters like any group, and is gone with everything it held once its subscription closes', async (c) => {
    const topic = c.topic('eph');
    const group = c.group('eph');
    // A durable group on the same topic is not touched by any of it.
    const durable = await sub(c, topic, c.group('durable'));
    const { t, r } = await sub(c, topic, group, 10, true);
    if (hasRouteCount) expect(await routeCount(t, topic)).toBe(2);
    const msgs = Array.from({ length: 4 }, () => c.message(topic));
    await t.publish(msgs);
    const got = await r.expectMany(4);
    const byId = new Map(got.map((d) => [d.message.id, d]));
    expect(got.every((d) => d.group === group && d.attempt === 1)).toBe(true);
    await byId.get(msgs[0]!.id)!.ack();
    await byId.get(msgs[1]!.id)!.nack({ error: 'try again' });
    const again = await r.expect();
    expect(again.message.id).toBe(msgs[1]!.id);
    expect(again.attempt).toBe(2);
    expect(again.lastError).toBe('try again');
    await again.ack();
    await byId.get(msgs[2]!.id)!.deadLetter('poison', { error: 'HANDLER: boom' });
    await until(async () => (await t.deadLetters.list({ group })).length === 1, 10_000, 'its dead letter');
    // msgs[3] stays unsettled and one more is delivered and held when the subscription closes.
    await t.publish([c.message(topic)]);
    await r.expect();
    if (hasGroupStats) {
      await until(
        async () => sameStats(await groupStats(t, group), { backlog: 0, inFlight: 2 }),
        10_000,
        '2 in flight',
      );
    }
    await r.close();
    if (hasRouteCount) expect(await routeCount(t, topic)).toBe(1);
    if (hasGroupStats) expect(await groupStats(t, group)).toEqual(ZERO);
    expect(await t.deadLetters.list({ group })).toHaveLength(0);
    // Nothing published later is kept for it.
    await t.publish([c.message(topic)]);
    if (hasGroupStats) expect(await groupStats(t, group)).toEqual(ZERO);
    expect(await t.deadLetters.list({ group })).toHaveLength(0);
    const all = await durable.r.expectMany(6);
    for (const d of all) await d.ack();
  });

  if (hasRouteCount) {
    test('routeCount counts the groups whose patterns match the topic, durable ones after their subscriptions closed too', async (c) => {
      const t = await c.open();
      const p = c.prefix;
      expect(await routeCount(t, `${p}.rc.a.x`)).toBe(0);
      const patterns: [string, string][] = [[`${p}.rc.a.x`, 'literal']];
      if (options.capabilities.wildcards) {
        patterns.push([`${p}.rc.*.x`, 'star'], [`${p}.rc.>`, 'tail'], [`${p}.other.>`, 'other']);
      }
      for (const [pattern, name] of patterns) {
        const s = await t.subscribe(pattern, { group: c.group(name), prefetch: 1, ackTimeoutMs: c.ackTimeoutMs });
        await s.close();
      }
      if (!options.capabilities.wildcards) {
        expect(await routeCount(t, `${p}.rc.a.x`)).toBe(1);
        expect(await routeCount(t, `${p}.rc.b.x`)).toBe(0);
        return;
      }
      expect(await routeCount(t, `${p}.rc.a.x`)).toBe(3);
      expect(await routeCount(t, `${p}.rc.b.x`)).toBe(2);
      expect(await routeCount(t, `${p}.rc.a.y`)).toBe(1);
      expect(await routeCount(t, `${p}.rc.a`)).toBe(1);
      expect(await routeCount(t, `${p}.rc`)).toBe(0);
      expect(await routeCount(t, `${p}.other.z`)).toBe(1);
      // Another client of the same backend sees the same groups.
      const other = await c.open();
      expect(await routeCount(other, `${p}.rc.a.x`)).toBe(3);
    });
  }

  if (hasGroupStats) {
    test('groupStats reports the backlog before consuming and what is in flight while a delivery is held', async (c) => {
      const topic = c.topic('stats');
      const group = c.group();
      const declare = await sub(c, topic, group, 1);
      await declare.r.close();
      const t = declare.t;
      expect(await groupStats(t, c.group('unknown'))).toEqual(ZERO);
      await t.publish(Array.from({ length: 3 }, () => c.message(topic)));
      const expectStats = (want: GroupStats) =>
        until(async () => sameStats(await groupStats(t, group), want), 10_000, `stats ${JSON.stringify(want)}`);
      await expectStats({ backlog: 3, inFlight: 0 });
      // Stats count the deliveries of this client's subscriptions at least (see each transport).
      const r = new Reader(await t.subscribe(topic, { group, prefetch: 1, ackTimeoutMs: 10_000 }));
      const d = await r.expect();
      await expectStats({ backlog: 2, inFlight: 1 });
      await d.ack();
      for (let k = 0; k < 2; k++) await (await r.expect()).ack();
      await expectStats(ZERO);
    });
  }

  if (options.childModule && options.ephemeralCrashBoundMs !== undefined) {
    const childModule = options.childModule;
    const boundMs = options.ephemeralCrashBoundMs;
    test(
      'an ephemeral group whose consumer process is SIGKILLed is removed within the bound, with what it held and its dead letters',
      async (c) => {
        const topic = c.topic('eph.crash');
        const group = c.group('eph-crash');
        const t = await c.open();
        const child = startChild('ephemeral-child', [
          childModule,
          options.childArg ?? '',
          topic,
          group,
          String(c.ackTimeoutMs),
        ]);
        try {
          await until(() => child.lines.some((l) => l.ready), 30_000, `the child to subscribe: ${child.stderr()}`);
          if (hasRouteCount) expect(await routeCount(t, topic)).toBe(1);
          const dead = c.message(topic);
          const held = c.message(topic);
          await t.publish([dead]);
          await until(() => child.lines.some((l) => l.id === dead.id), 10_000, 'the child to dead-letter one');
          await t.publish([held]);
          await until(() => child.lines.some((l) => l.id === held.id), 10_000, 'the child to hold one');
          await child.kill();
          const gone = async () => {
            try {
              if (hasRouteCount && (await routeCount(t, topic)) !== 0) return false;
              if (hasGroupStats && !sameStats(await groupStats(t, group), ZERO)) return false;
              return (await t.deadLetters.list({ group })).length === 0;
            } catch {
              return false; // e.g. still owned by the dead connection
            }
          };
          await until(gone, boundMs, 'the ephemeral group of the killed process to be removed');
          await t.publish([c.message(topic)]);
          if (hasGroupStats) expect(await groupStats(t, group)).toEqual(ZERO);
          expect(await t.deadLetters.list({ group })).toHaveLength(0);
        } finally {
          await child.kill();
        }
      },
      boundMs + 60_000,
    );
  }
}
