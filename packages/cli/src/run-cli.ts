import type { Command } from 'commander';
import { ExitCode, errorLine, exitCodeFor } from './cli-error.js';
import type { CliContext } from './context.js';
import { Lifecycle, type SignalSource } from './lifecycle.js';
import { type Output, processOutput } from './output.js';

/** Where a CLI run writes and listens for signals; both default to the real process. */
export interface RunCliOptions {
  readonly out?: Output;
  /** Where SIGINT/SIGTERM come from; `process` by default. */
  readonly signals?: SignalSource;
}

/**
 * Runs a commander program built by `build` on `argv` (without the node and script entries)
 * and resolves with the exit code. Never rejects: failures become one `error: CODE: message`
 * line on stderr; whatever the command opened is closed before returning.
 */
export async function runCli(
  build: (ctx: CliContext) => Command,
  argv: readonly string[],
  options: RunCliOptions = {},
): Promise<number> {
  const out = options.out ?? processOutput();
  const lifecycle = new Lifecycle(options.signals ?? process);
  let code: number = ExitCode.ok;
  try {
    await build({ out, lifecycle }).parseAsync([...argv], { from: 'user' });
    code = lifecycle.signalExitCode ?? ExitCode.ok;
  } catch (err) {
    code = report(err, lifecycle, out);
  }
  try {
    await lifecycle.close();
  } catch (err) {
    if (code === ExitCode.ok) code = report(err, lifecycle, out);
  }
  return code;
}

function report(err: unknown, lifecycle: Lifecycle, out: Output): number {
  // After Ctrl-C, whatever the interrupted command threw is a consequence, not news.
  const signalled = lifecycle.signalExitCode;
  if (signalled !== undefined) return signalled;
  const line = errorLine(err);
  if (line) out.note(line);
  return exitCodeFor(err);
}
