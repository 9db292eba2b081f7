import { createRequire } from 'node:module';
import type { Command } from 'commander';
import { registerBenchCommand } from './bench/bench-command.js';
import { registerDemoCommand } from './commands/demo.js';
import { registerDlqCommand } from './commands/dlq.js';
import { registerHealthCommand } from './commands/health.js';
import { registerPublishCommand } from './commands/publish.js';
import { registerServeCommand } from './commands/serve.js';
import { registerTailCommand } from './commands/tail.js';
import { registerTokenCommand } from './commands/token.js';
import type { CliContext } from './context.js';
import { baseProgram, transportOption } from './program-base.js';
import { KEYRING_ENV, KEYRING_FILE_ENV, keyringOption } from './security/keyring-source.js';
import { VERIFY_CONFIG_ENV, verifyConfigOption } from './security/verify-config.js';

/** The package version, read from package.json (one level above both src/ and dist/). */
function version(): string {
  return (createRequire(import.meta.url)('../package.json') as { version: string }).version;
}

const SECURITY_HELP = `
Keys and verification rules (see docs/cli-security.md):
  The keyring comes from --keyring <file>, else $${KEYRING_FILE_ENV} (a path), else
  $${KEYRING_ENV} (the JSON itself); the first one given wins. Key material is never
  printed: errors name the file and the JSON path of the bad field only. A keyring
  file readable by group or others draws a warning (chmod 600 it).
  The verification rules come from --verify-config <file>, else $${VERIFY_CONFIG_ENV};
  tail reloads them when the file changes and on SIGHUP, keeping the running rules
  when the new file is invalid.`;

/** The `agentbus` command with all its subcommands. */
export function createProgram(ctx: CliContext): Command {
  const program = baseProgram('agentbus')
    .description(
      'a reliable message bus for AI agents: publish, tail, dead letters, tokens, the gateway (serve, health), demo and bench',
    )
    .version(version())
    .addOption(transportOption())
    .addOption(keyringOption())
    .addOption(verifyConfigOption())
    .addHelpText('after', SECURITY_HELP);
  registerPublishCommand(program, ctx);
  registerTailCommand(program, ctx);
  registerDlqCommand(program, ctx);
  registerTokenCommand(program, ctx);
  registerServeCommand(program, ctx);
  registerHealthCommand(program, ctx);
  registerDemoCommand(program, ctx);
  registerBenchCommand(program, ctx);
  return program;
}
