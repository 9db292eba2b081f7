import { ConfigError } from '@agentbus/core';
import { describe, expect, it } from 'vitest';
import { parseBenchMiddleware } from '../src/bench/bench-middleware.js';
import { median } from '../src/bench/bench-report.js';
import { type BenchReport, benchTable, resolveBenchOptions } from '../src/bench/index.js';
import { createStyle } from '../src/output.js';
import { agentbus } from './cli-process.js';

/** The JSON object `--json` prints as the last line of stdout. */
function lastJsonLine(stdout: string): BenchReport {
  return JSON.parse(stdout.trim().split('\n').at(-1) ?? '') as BenchReport;
}

function expectPositive(report: BenchReport, keys: readonly (keyof BenchReport)[]): void {
  for (const key of keys) {
    const v = report[key];
    expect(typeof v === 'number' && Number.isFinite(v) && v > 0, `${key} = ${String(v)}`).toBe(true);
  }
}

describe('the middleware benchmark options', () => {
  it('reads a list, or stack for retry, dedup and sequencing, in the order the bus runs them', () => {
    expect(parseBenchMiddleware('stack')).toEqual(['retry', 'sequencing', 'dedup']);
    expect(parseBenchMiddleware('dedup, retry')).toEqual(['retry', 'dedup']);
    expect(parseBenchMiddleware('sequencing,sequencing')).toEqual(['sequencing']);
    // The security stacks: the signing algorithm first (its verifier goes around everything), then schema.
    expect(parseBenchMiddleware('security-hmac')).toEqual(['sign-hmac', 'schema']);
    expect(parseBenchMiddleware('schema, stack, sign-ed25519')).toEqual([
      'sign-ed25519',
      'retry',
      'schema',
      'sequencing',
      'dedup',
    ]);
    expect(() => parseBenchMiddleware('sign-hmac,sign-ed25519')).toThrow(/one algorithm/);
    expect(resolveBenchOptions({}).middleware).toEqual([]);
  });

  it('refuses an unknown middleware and a zero round count with a ConfigError naming the field', () => {
    expect(() => parseBenchMiddleware('retry,cache')).toThrow(ConfigError);
    expect(() => resolveBenchOptions({ middleware: ['cache' as never] })).toThrow(/bench\.middleware|cache/);
    try {
      resolveBenchOptions({ rounds: 0 });
      expect.unreachable();
    } catch (err) {
      expect((err as ConfigError).path).toBe('bench.rounds');
    }
  });

  it('says on the command line which middleware there is (usage error, exit 2)', async () => {
    const out = await agentbus(['--transport', 'memory:', 'bench', '--middleware', 'cache']);
    expect(out.code).toBe(2);
    expect(out.stderr).toMatch(/--middleware.*cache.*retry, dedup, sequencing, sign-hmac, sign-ed25519 and schema/s);
  });
});

describe('agentbus bench --middleware on memory', () => {
  it('measures retry + dedup + sequencing beside the bare bus and reports both in the JSON line and the table', async () => {
    const args = ['--messages', '300', '--size', '256', '--consumers', '2', '--warmup', '100', '--rounds', '3'];
    const out = await agentbus(['--transport', 'memory:', 'bench', '--middleware', 'stack', ...args, '--json']);
    expect(out.code, out.stderr).toBe(0);
    expect(out.stderr).toContain('agentbus + retry + sequencing + dedup: end to end');
    expect(out.stderr).toContain('bare agentbus: end to end, round 3 of 3');
    const report = lastJsonLine(out.stdout);

    // The fields every run has are still there, for the agentbus side (with middleware).
    expect(report).toMatchObject({ transport: 'memory:', messages: 300, size: 256, raw: 'raw array queue' });
    expectPositive(report, ['e2e_per_s', 'publish_per_s', 'drain_per_s', 'p99_ms', 'raw_e2e_per_s', 'ratio']);

    expect(report).toMatchObject({ middleware: 'retry,sequencing,dedup', workflows: 100, rounds: 3 });
    expectPositive(report, [
      'middleware_e2e_per_s',
      'bare_e2e_per_s',
      'middleware_ratio',
      'bare_publish_per_s',
      'bare_drain_per_s',
      'bare_p50_ms',
      'bare_p99_ms',
      'bare_peak_rss_mb',
    ]);
    expect(report.bare_p50_ms as number).toBeLessThanOrEqual(report.bare_p99_ms as number);
    const withMiddleware = report.middleware_e2e_rounds_per_s ?? [];
    const bare = report.bare_e2e_rounds_per_s ?? [];
    expect(withMiddleware).toHaveLength(3);
    expect(bare).toHaveLength(3);
    for (const n of [...withMiddleware, ...bare]) expect(n).toBeGreaterThan(0);
    // The first round is each side's end-to-end phase; the figures compared are the medians.
    expect(withMiddleware[0]).toBe(report.e2e_per_s);
    expect(report.middleware_e2e_per_s).toBe(median(withMiddleware));
    expect(report.bare_e2e_per_s).toBe(median(bare));
    expect(report.middleware_ratio).toBeCloseTo(
      (report.middleware_e2e_per_s as number) / (report.bare_e2e_per_s as number),
      2,
    );

    const table = benchTable(report, createStyle(false)).join('\n');
    expect(table).toMatch(/agentbus\s+bare bus\s+agentbus\/bare\s+raw\s+agentbus\/raw/);
    expect(table).toContain(`middleware/bare ${(report.middleware_ratio as number).toFixed(2)}`);
  });

  it('measures signing and schema validation beside the bare bus: every message signed, verified and validated', async () => {
    const args = ['--messages', '200', '--size', '128', '--consumers', '2', '--warmup', '50', '--rounds', '1'];
    const out = await agentbus([
      '--transport',
      'memory:',
      'bench',
      '--middleware',
      'security-ed25519',
      ...args,
      '--json',
    ]);
    expect(out.code, out.stderr).toBe(0);
    expect(out.stderr).toContain('agentbus + sign-ed25519 + schema: end to end');
    const report = lastJsonLine(out.stdout);
    expect(report).toMatchObject({ middleware: 'sign-ed25519,schema' });
    expectPositive(report, ['middleware_e2e_per_s', 'bare_e2e_per_s', 'middleware_ratio']);
  });

  it('adds no middleware fields to a run without middleware', async () => {
    const out = await agentbus([
      '--transport',
      'memory:',
      'bench',
      '--messages',
      '200',
      '--warmup',
      '0',
      '--consumers',
      '1',
      '--json',
    ]);
    expect(out.code, out.stderr).toBe(0);
    const report = lastJsonLine(out.stdout);
    expect(report.e2e_per_s).toBeGreaterThan(0);
    for (const key of ['middleware', 'bare_e2e_per_s', 'middleware_ratio', 'rounds'] as const) {
      expect(report[key], key).toBeUndefined();
    }
  });
});
