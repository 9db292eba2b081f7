import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { runBenchScript, type ScriptRun } from './run-script.js';

/** Runs `npm run bench -- …` the way the root script does, without npm in between. */
function bench(args: readonly string[]): Promise<ScriptRun> {
  return runBenchScript('main.ts', args, 25_000);
}

const RATES = ['publish_per_s', 'drain_per_s', 'e2e_per_s', 'raw_publish_per_s', 'raw_drain_per_s', 'raw_e2e_per_s'];
const LATENCIES = ['p50_ms', 'p95_ms', 'p99_ms', 'raw_p50_ms', 'raw_p95_ms', 'raw_p99_ms'];

function lastJsonLine(stdout: string): Record<string, unknown> {
  const lines = stdout.trim().split('\n');
  return JSON.parse(lines[lines.length - 1] ?? '') as Record<string, unknown>;
}

function expectSaneReport(report: Record<string, unknown>, transport: string): void {
  expect(report).toMatchObject({ transport, messages: 300, size: 256, consumers: 2 });
  for (const key of [...RATES, ...LATENCIES, 'peak_rss_mb', 'raw_peak_rss_mb', 'ratio']) {
    expect(report[key], key).toBeTypeOf('number');
    expect(Number.isFinite(report[key]) && (report[key] as number) > 0, `${key} = ${report[key]}`).toBe(true);
  }
  expect(report.p50_ms as number).toBeLessThanOrEqual(report.p99_ms as number);
  expect(report.ratio).toBeCloseTo((report.e2e_per_s as number) / (report.raw_e2e_per_s as number), 2);
}

describe('npm run bench', () => {
  const tiny = ['--messages', '300', '--size', '256', '--consumers', '2', '--warmup', '0', '--json'];

  it('prints one JSON object with every figure as the last line on memory:', async () => {
    const out = await bench(['--transport', 'memory:', ...tiny]);
    expect(out.code, out.stderr).toBe(0);
    expectSaneReport(lastJsonLine(out.stdout), 'memory:');
  });

  it('runs sqlite on temp files it removes afterwards', async () => {
    const out = await bench(['--transport', 'sqlite:', ...tiny]);
    expect(out.code, out.stderr).toBe(0);
    expectSaneReport(lastJsonLine(out.stdout), 'sqlite:');
    const dir = /fresh files in (\S+)/.exec(out.stderr)?.[1];
    expect(dir).toBeDefined();
    expect(existsSync(dir as string)).toBe(false);
  });
});
