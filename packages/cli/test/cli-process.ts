import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** The repository root: child processes run there so `--import tsx` resolves. */
export const ROOT = fileURLToPath(new URL('../../..', import.meta.url));
const BIN = fileURLToPath(new URL('../src/bin.ts', import.meta.url));

export interface Finished {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** A running `agentbus` child process (from source, no build needed). */
export class CliProcess {
  readonly child: ChildProcess;
  readonly finished: Promise<Finished>;
  stdout = '';
  stderr = '';

  constructor(args: readonly string[], env: NodeJS.ProcessEnv = {}) {
    this.child = spawn(process.execPath, ['--conditions=source', '--import', 'tsx', BIN, ...args], {
      cwd: ROOT,
      // No colour and no inherited transport, so output and defaults are predictable.
      env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: undefined, AGENTBUS_TRANSPORT: undefined, ...env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    this.child.stdout?.on('data', (d: Buffer) => {
      this.stdout += d.toString('utf8');
    });
    this.child.stderr?.on('data', (d: Buffer) => {
      this.stderr += d.toString('utf8');
    });
    this.finished = new Promise((resolve, reject) => {
      this.child.on('error', reject);
      this.child.on('close', (code, signal) => resolve({ code, signal, stdout: this.stdout, stderr: this.stderr }));
    });
  }

  /**
   * Resolves once `test` holds for the output so far; fails after `timeoutMs` or if the process exits first.
   * The default is generous: a CLI process (node + tsx) has taken over 15 s to start beside the whole suite in CI.
   */
  async waitFor(test: (p: CliProcess) => boolean, what: string, timeoutMs = 45_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let exited = false;
    void this.finished.then(() => {
      exited = true;
    });
    while (!test(this)) {
      if (exited) throw new Error(`process exited before ${what}:\n${this.stdout}\n${this.stderr}`);
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}:\n${this.stdout}\n${this.stderr}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /** Waits for exit, killing the process if it has not exited within `timeoutMs`. */
  async exit(timeoutMs = 45_000): Promise<Finished> {
    const timer = setTimeout(() => this.child.kill('SIGKILL'), timeoutMs);
    try {
      return await this.finished;
    } finally {
      clearTimeout(timer);
    }
  }
}

/** Runs `agentbus …` to completion. */
export function agentbus(args: readonly string[], env?: NodeJS.ProcessEnv, timeoutMs?: number): Promise<Finished> {
  return new CliProcess(args, env).exit(timeoutMs);
}

/** The single JSON value printed on stdout. */
export function json<T = unknown>(out: Finished): T {
  return JSON.parse(out.stdout) as T;
}
