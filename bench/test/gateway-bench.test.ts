import { describe, expect, it } from 'vitest';
import { runBenchScript } from './run-script.js';

/** Runs `npm run bench:gateway -- …` from source. */
const gatewayBench = (args: readonly string[]) => runBenchScript('gateway-bench.ts', args, 60_000);

describe.concurrent('bench:gateway', { timeout: 90_000 }, () => {
  // 3,000 messages from one WebSocket is past the default frame rate limit's burst: the run must
  // still finish (it raises the limit) and measure both sides.
  for (const transport of ['memory:', 'sqlite:']) {
    it(`measures WebSocket and in-process throughput and latency on ${transport}`, async () => {
      const out = await gatewayBench([
        '--transport',
        transport,
        '--messages',
        '3000',
        '--size',
        '256',
        '--rate',
        '500',
        '--latency-seconds',
        '0.5',
        '--json',
      ]);
      expect(out.code, out.stderr).toBe(0);
      const r = JSON.parse(out.stdout.trim().split('\n').at(-1) as string) as Record<string, number>;
      for (const field of ['ws_e2e_per_s', 'inprocess_e2e_per_s', 'ws_p99_ms', 'inprocess_p99_ms', 'ratio'])
        expect(r[field], field).toBeGreaterThan(0);
      expect(r.ws_p50_ms).toBeLessThanOrEqual(r.ws_p99_ms as number);
      expect(r.ratio).toBeCloseTo((r.ws_e2e_per_s as number) / (r.inprocess_e2e_per_s as number), 2);
    });
  }
});
