import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

export interface ScriptRun {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * Runs a bench entry point from source (`bench/src/<script>`) as its root npm script would,
 * without npm in between; killed after `killAfterMs`, so a stall fails instead of hanging.
 */
export function runBenchScript(script: string, args: readonly string[], killAfterMs: number): Promise<ScriptRun> {
  const entry = fileURLToPath(new URL(`../src/${script}`, import.meta.url));
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--conditions=source', '--import', 'tsx', entry, ...args], {
      cwd: ROOT,
      env: { ...process.env, NO_COLOR: '1', AGENTBUS_TRANSPORT: undefined },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString('utf8');
    });
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString('utf8');
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), killAfterMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}
