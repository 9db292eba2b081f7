import { InvalidArgumentError } from 'commander';
import { UsageError } from './cli-error.js';

/**
 * Commander argument parsers. They throw InvalidArgumentError, which commander reports as
 * `error: option '--x <n>' argument 'y' is invalid. <why>` before we exit with code 2.
 */

/** An integer ≥ 1. */
export function positiveInt(value: string): number {
  const n = Number(value);
  if (!/^\s*\d+\s*$/.test(value) || !Number.isSafeInteger(n) || n < 1) {
    throw new InvalidArgumentError('a positive integer is expected.');
  }
  return n;
}

/** A finite number > 0 (rates, durations). */
export function positiveNumber(value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n <= 0)
    throw new InvalidArgumentError('a positive number is expected.');
  return n;
}

/** A message priority, 0 (lowest) … 9 (highest). */
export function priority(value: string): number {
  const n = Number(value);
  if (!/^\s*\d\s*$/.test(value) || n > 9) throw new InvalidArgumentError('an integer 0–9 is expected.');
  return n;
}

/** Collects repeated `--header k=v` into a record; the last value for a key wins. */
export function header(value: string, previous: Record<string, string> | undefined): Record<string, string> {
  const eq = value.indexOf('=');
  if (eq <= 0) throw new InvalidArgumentError('k=v is expected, e.g. --header tenant=acme.');
  return { ...previous, [value.slice(0, eq).trim()]: value.slice(eq + 1) };
}

const DURATION_UNITS_MS: Readonly<Record<string, number>> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** A duration with its unit, `500ms`, `30s`, `15m`, `1h`, `2d`, as milliseconds (> 0). */
export function duration(value: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$/.exec(value);
  const ms = m ? Number(m[1]) * (DURATION_UNITS_MS[m[2] as string] as number) : Number.NaN;
  if (!Number.isFinite(ms) || ms <= 0) {
    throw new InvalidArgumentError('a duration with a unit is expected, e.g. 500ms, 30s, 15m, 1h, 2d.');
  }
  return ms;
}

/** A comma-separated list (`--roles a,b`), repeatable; empty items are refused. */
export function commaList(value: string, previous: readonly string[] | undefined): string[] {
  const items = value.split(',').map((s) => s.trim());
  if (items.some((s) => s === ''))
    throw new InvalidArgumentError('a comma-separated list of non-empty names is expected.');
  return [...(previous ?? []), ...items];
}

/** Parses the JSON given on the command line, naming the problem when it is malformed. */
export function parseJsonArgument(text: string, name: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    const shown = text.length > 60 ? `${text.slice(0, 57)}...` : text;
    throw new UsageError(`${name} is not valid JSON (${(err as Error).message}): ${shown}`);
  }
}

/** Reads all of stdin as UTF-8 (for `-` arguments). */
export async function readStdin(stream: NodeJS.ReadableStream = process.stdin): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
  return Buffer.concat(chunks).toString('utf8');
}
