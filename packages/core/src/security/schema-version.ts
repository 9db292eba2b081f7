import { ConfigError } from '../errors.js';

/** A schema version: `2`, `'2'`, `'1.3'` (dot-separated non-negative integers, compared numerically). */
export type SchemaVersionInput = string | number;

/** A version's canonical spelling (as in `Envelope.schemaversion`) and its numeric segments. */
export interface ParsedVersion {
  readonly text: string;
  readonly key: readonly number[];
}

const VERSION = /^(0|[1-9]\d*)(\.(0|[1-9]\d*))*$/;

/** Parses a version, or throws ConfigError naming `path`. Numbers must be integers; no leading zeros. */
export function parseVersion(value: SchemaVersionInput, path: string): ParsedVersion {
  const text = typeof value === 'number' ? String(value) : value;
  if (typeof text !== 'string' || !VERSION.test(text) || (typeof value === 'number' && !Number.isSafeInteger(value))) {
    throw new ConfigError(`must be a non-negative integer or dot-separated integers, got ${String(value)}`, { path });
  }
  return { text, key: text.split('.').map(Number) };
}

/** Orders versions numerically, segment by segment; missing segments count as 0 (`1` = `1.0`). */
export function compareVersions(a: ParsedVersion, b: ParsedVersion): number {
  for (let i = 0; i < Math.max(a.key.length, b.key.length); i++) {
    const d = (a.key[i] ?? 0) - (b.key[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}
