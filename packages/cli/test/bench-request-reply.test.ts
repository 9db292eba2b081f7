import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const bin = fileURLToPath(new URL('../src/bin.ts', import.meta.url));

describe('bench --request-reply', () => {
  it('reports round trips per second and latency quantiles as the last JSON line', () => {
    const r = spawnSync(
      process.execPath,
      [
        '--conditions=source',
        '--import',
        'tsx',
        bin,
        'bench',
        '--transport',
        'sqlite:./unused.db',
        '--request-reply',
        '--messages',
        '300',
        '--concurrency',
        '8',
        '--size',
        '64',
        '--json',
      ],
      { encoding: 'utf8', timeout: 60_000 },
    );
    if (r.status !== 0) throw new Error(`exit ${r.status}: ${r.stderr}`);
    const last = JSON.parse(r.stdout.trim().split('\n').at(-1) as string);
    expect(last).toMatchObject({ requests: 300, concurrency: 8, size: 64 });
    expect(last.transport).toMatch(/^sqlite:/);
    for (const k of ['rr_per_s', 'rr_p50_ms', 'rr_p95_ms', 'rr_p99_ms', 'rr_serial_p50_ms', 'rr_serial_p99_ms']) {
      expect(Number.isFinite(last[k]) && last[k] > 0).toBe(true);
    }
    expect(last.rr_p50_ms).toBeLessThanOrEqual(last.rr_p99_ms);
  }, 90_000);
});
