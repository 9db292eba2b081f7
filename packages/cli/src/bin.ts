#!/usr/bin/env node
import { ExitCode, errorLine } from './cli-error.js';
import { createProgram } from './program.js';
import { runCli } from './run-cli.js';

// A safety net: runCli already reports every failure it awaits; anything escaping it is a bug,
// reported in the same one-line form rather than as a stack trace.
process.on('unhandledRejection', (err) => {
  process.stderr.write(`${errorLine(err) ?? 'error: INTERNAL: unhandled rejection'}\n`);
  process.exit(ExitCode.failure);
});

process.exitCode = await runCli(createProgram, process.argv.slice(2));
// Everything was closed; if some handle still keeps the loop alive, do not hang the shell.
setTimeout(() => process.exit(), 2_000).unref();
