import { describe, it } from 'vitest';
import { busTests } from './bus-tests.js';
import { type ConformanceOptions, TestContext } from './context.js';
import { transportTests } from './transport-tests.js';

/**
 * Registers the whole conformance suite (DESIGN §4) for one transport. Call it from one small
 * test file per transport package. Tests run concurrently: each uses its own topics and groups.
 */
export function transportConformance(options: ConformanceOptions): void {
  const title = `conformance: ${options.name}`;
  if (options.skipReason) {
    describe.skip(`${title} (skipped: ${options.skipReason})`, () => {
      it('is skipped', () => {});
    });
    return;
  }
  describe.concurrent(title, () => {
    const test = (name: string, fn: (c: TestContext) => Promise<void>, timeoutMs = 30_000) => {
      it(
        name,
        async () => {
          const c = new TestContext(options);
          try {
            await fn(c);
          } finally {
            await c.cleanup();
          }
        },
        timeoutMs,
      );
    };
    transportTests(options, test);
    busTests(options, test);
  });
}
