import {
  createBus,
  HandlerError,
  NoRespondersError,
  silentLogger,
  TimeoutError,
  type Transport,
  ValidationError,
} from '@agentbus/core';
import { describe, expect, it } from 'vitest';
import { until } from './wait.js';

export interface RequestReplyConformanceOptions {
  readonly name: string;
  /** A new client of the backend under test (each bus gets its own). */
  readonly open: () => Transport;
  readonly skipReason?: string | undefined;
}

let n = 0;
const unique = (what: string) => `rr${process.pid}x${Date.now().toString(36)}x${n++}.${what}`;

/** Request-reply end to end on one transport: requesters and a replier on separate clients. */
export function requestReplyConformance(o: RequestReplyConformanceOptions): void {
  describe.skipIf(o.skipReason)(`request-reply on ${o.name}`, () => {
    it('answers concurrent requests of two requesters, each getting its own replies', async () => {
      const topic = unique('add');
      const replier = createBus({ transport: o.open(), logger: silentLogger });
      const alice = createBus({ transport: o.open(), logger: silentLogger, source: 'alice' });
      const bob = createBus({ transport: o.open(), logger: silentLogger, source: 'bob' });
      try {
        await replier.reply<{ a: number }>(topic, (d) => `${d.envelope.source}:${d.data.a + 1}`, {
          concurrency: 8,
          prefetch: 32,
        });
        const ask = (bus: typeof alice, k: number) =>
          Promise.all(Array.from({ length: k }, (_, a) => bus.request<string>(topic, { a }, { timeoutMs: 15_000 })));
        const [a, b] = await Promise.all([ask(alice, 20), ask(bob, 20)]);
        expect(a).toEqual(Array.from({ length: 20 }, (_, i) => `alice:${i + 1}`));
        expect(b).toEqual(Array.from({ length: 20 }, (_, i) => `bob:${i + 1}`));
      } finally {
        await Promise.all([alice.close(), bob.close()]);
        await replier.close();
      }
    });

    it("rebuilds a replier's error as the same class on the requester", async () => {
      const topic = unique('check');
      const replier = createBus({ transport: o.open(), logger: silentLogger });
      const requester = createBus({ transport: o.open(), logger: silentLogger });
      try {
        await replier.reply<string>(topic, (d) => {
          if (d.data === 'bad') throw new ValidationError('prompt is empty', { data: { field: 'prompt' } });
          throw new Error('tool crashed');
        });
        const bad = await requester.request(topic, 'bad', { timeoutMs: 15_000 }).catch((e: unknown) => e);
        expect(bad).toBeInstanceOf(ValidationError);
        expect(bad).toMatchObject({ message: 'prompt is empty', data: { field: 'prompt' } });
        const crashed = await requester.request(topic, 'x', { timeoutMs: 15_000 }).catch((e: unknown) => e);
        expect(crashed).toBeInstanceOf(HandlerError);
      } finally {
        await requester.close();
        await replier.close();
      }
    });

    it('times out with TimeoutError and counts the reply that comes late', async () => {
      const topic = unique('slow');
      const replier = createBus({ transport: o.open(), logger: silentLogger });
      const requester = createBus({ transport: o.open(), logger: silentLogger });
      let release!: () => void;
      const gate = new Promise<void>((r) => {
        release = r;
      });
      let received = 0;
      try {
        await replier.reply(topic, async () => {
          received++;
          await gate;
          return 'late';
        });
        const pending = requester.request(topic, {}, { timeoutMs: 1_500 }).catch((e: unknown) => e);
        await until(() => received === 1, 10_000, 'the request to reach the replier');
        expect(await pending).toBeInstanceOf(TimeoutError);
        release();
        await until(() => requester.lateReplies === 1, 10_000, 'the late reply');
      } finally {
        release();
        await requester.close();
        await replier.close();
      }
    });

    it('fails fast with NoRespondersError where the transport can tell nobody subscribes', async (ctx) => {
      const transport = o.open();
      if (typeof transport.routeCount !== 'function') {
        await transport.close();
        ctx.skip(); // the transport cannot tell; the request would time out instead
        return;
      }
      const requester = createBus({ transport, logger: silentLogger });
      try {
        const err = await requester.request(unique('nobody'), {}, { timeoutMs: 10_000 }).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(NoRespondersError);
      } finally {
        await requester.close();
      }
    });
  });
}
