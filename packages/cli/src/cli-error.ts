import { BusError } from '@agentbus/core';
import { CommanderError } from 'commander';

/** Bad command-line input (a malformed argument, a missing choice): exit code 2. */
export class UsageError extends BusError {
  override readonly code = 'USAGE';
}

/** A record the user named does not exist (e.g. `dlq show <id>`): exit code 1. */
export class NotFoundError extends BusError {
  override readonly code = 'NOT_FOUND';
}

/** Process exit codes of the `agentbus` command. */
export const ExitCode = Object.freeze({
  ok: 0,
  /** A runtime failure: the backend refused, a record is missing, a deadline passed. */
  failure: 1,
  /** The input was wrong: flags, arguments, transport URL, topic names. */
  usage: 2,
  /** 128 + signal number, the shell convention. */
  sigint: 130,
  sigterm: 143,
});

/** Codes that mean "what you typed is wrong" rather than "something failed". */
const USAGE_CODES = new Set(['USAGE', 'CONFIG', 'VALIDATION']);

/** The exit code for a thrown value. */
export function exitCodeFor(err: unknown): number {
  if (err instanceof CommanderError) {
    // Help and --version are reported through exceptions too when exitOverride is on.
    if (err.exitCode === 0) return ExitCode.ok;
    return ExitCode.usage;
  }
  if (err instanceof BusError) return USAGE_CODES.has(err.code) ? ExitCode.usage : ExitCode.failure;
  return ExitCode.failure;
}

/**
 * The one line printed on stderr for a failure, without a stack trace: `error: <CODE>: <message>`.
 * Commander errors return undefined because commander has already printed its own message.
 */
export function errorLine(err: unknown): string | undefined {
  if (err instanceof CommanderError) return undefined;
  if (err instanceof BusError) return `error: ${err.code}: ${oneLine(err.message)}`;
  if (err instanceof Error) return `error: INTERNAL: ${err.name}: ${oneLine(err.message)}`;
  return `error: INTERNAL: ${oneLine(String(err))}`;
}

function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, ' ');
}
