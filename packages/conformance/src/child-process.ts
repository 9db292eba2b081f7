import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export interface ChildLine {
  readonly id?: string;
  readonly attempt?: number;
  readonly ready?: boolean;
  /** chaos-child: a random handler failure, and that it went idle. */
  readonly failed?: boolean;
  readonly idle?: boolean;
}

/** A consumer child process and the lines it printed. */
export interface ConsumerChild {
  readonly process: ChildProcess;
  readonly lines: ChildLine[];
  readonly exited: Promise<number | null>;
  /** What the child wrote to stderr so far (for diagnostics). */
  stderr(): string;
  kill(): Promise<void>;
}

const here = import.meta.url;
const ext = here.endsWith('.ts') ? '.ts' : '.js';

/** Starts `child-consumer` in a new Node process (TypeScript sources run through tsx). */
export function startConsumerChild(args: {
  module: string;
  arg: string;
  pattern: string;
  group: string;
  ackTimeoutMs: number;
  prefetch: number;
  mode: 'hold' | 'ack';
}): ConsumerChild {
  return startChild('child-consumer', [
    args.module,
    args.arg,
    args.pattern,
    args.group,
    String(args.ackTimeoutMs),
    String(args.prefetch),
    args.mode,
  ]);
}

/**
 * Starts one of this package's child scripts (`name` without extension) in a new Node process;
 * it prints one JSON line per event on stdout.
 */
export function startChild(name: string, argv: readonly string[]): ConsumerChild {
  const script = fileURLToPath(new URL(`./${name}${ext}`, here));
  const nodeArgs = ext === '.ts' ? ['--conditions=source', '--import', 'tsx'] : [];
  const child = spawn(process.execPath, [...nodeArgs, script, ...argv], { stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: ChildLine[] = [];
  let partial = '';
  child.stdout?.setEncoding('utf8');
  child.stdout?.on('data', (chunk: string) => {
    const parts = (partial + chunk).split('\n');
    partial = parts.pop() ?? '';
    for (const p of parts) if (p.trim()) lines.push(JSON.parse(p) as ChildLine);
  });
  let stderr = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (chunk: string) => {
    stderr += chunk;
  });
  // 'close', not 'exit': lines the child wrote just before it died may still be in the pipe at
  // 'exit', and a delivery it printed (then acked) must be counted.
  const exited = new Promise<number | null>((resolve) => {
    child.on('close', (code) => {
      if (code !== null && code !== 0 && stderr) process.stderr.write(`consumer child failed (${code}): ${stderr}\n`);
      resolve(code);
    });
  });
  return {
    process: child,
    lines,
    exited,
    stderr: () => stderr,
    async kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
}
