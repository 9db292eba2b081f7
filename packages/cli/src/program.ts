import { createRequire } from 'node:module';
import type { Command } from 'commander';
import { registerBenchCommand } from './bench/bench-command.js';
import { registerDemoCommand } from './commands/demo.js';
import { registerDlqCommand } from './commands/dlq.js';
import { registerPublishCommand } from './commands/publish.js';
import { registerTailCommand } from './commands/tail.js';
import type { CliContext } from './context.js';
import { baseProgram, transportOption } from './program-base.js';

/** The package version, read from package.json (one level above both src/ and dist/). */
function version(): string {
  return (createRequire(import.meta.url)('../package.json') as { version: string }).version;
}

/** The `agentbus` command with all its subcommands. */
export function createProgram(ctx: CliContext): Command {
  const program = baseProgram('agentbus')
    .description('a reliable message bus for AI agents: publish, tail, dead letters, demo and bench')
    .version(version())
    .addOption(transportOption());
  registerPublishCommand(program, ctx);
  registerTailCommand(program, ctx);
  registerDlqCommand(program, ctx);
  registerDemoCommand(program, ctx);
  registerBenchCommand(program, ctx);
  return program;
}
