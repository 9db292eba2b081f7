import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const GATEWAY_BENCH = fileURLToPath(new URL('../src/gateway-bench.ts', import.meta.url));

/** Runs `npm run bench:gateway -- …` from source; killed after 60 s so a stall fails instead of hanging. */
function gatewayBench(args: readonly string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--conditions=source', '--import', 'tsx', GATEWAY_BENCH, ...args], {
      cwd: ROOT,
      env: { ...process.env, NO_COLOR: '1' },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString('utf8');
    });
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString('utf8');
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

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
