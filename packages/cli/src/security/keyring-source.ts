import { ConfigError, type Keyring, loadKeyringFromJson } from '@agentbus/core';
import { type Command, Option } from 'commander';
import { UsageError } from '../cli-error.js';
import type { Output } from '../output.js';
import { readKeyFile, warnIfExposed } from './key-file.js';

/** The environment variable naming the keyring file when `--keyring` is absent. */
export const KEYRING_FILE_ENV = 'AGENTBUS_KEYRING_FILE';
/** The environment variable holding the keyring JSON itself, the last resort. */
export const KEYRING_ENV = 'AGENTBUS_KEYRING';

/** The `--keyring <file>` global option (its value falls back to `$AGENTBUS_KEYRING_FILE`). */
export function keyringOption(): Option {
  return new Option(
    '--keyring <file>',
    `signing keyring (JSON): publish signs with its active key, tail verifies and dead-letters what fails; ` +
      `without it: $${KEYRING_FILE_ENV}, then the JSON in $${KEYRING_ENV}`,
  ).env(KEYRING_FILE_ENV);
}

/** Where the keyring comes from, after flag and environment were weighed. */
export type KeyringSource =
  | { readonly kind: 'file'; readonly path: string; readonly from: '--keyring' | typeof KEYRING_FILE_ENV }
  | { readonly kind: 'env'; readonly text: string };

/**
 * Picks the keyring source: `--keyring <file>`, else `$AGENTBUS_KEYRING_FILE`, else the JSON in
 * `$AGENTBUS_KEYRING`; undefined when none is given. An empty environment variable counts as unset.
 */
export function keyringSourceOf(command: Command, env: NodeJS.ProcessEnv = process.env): KeyringSource | undefined {
  const path = command.optsWithGlobals<{ keyring?: string }>().keyring;
  const fromEnv = command.getOptionValueSourceWithGlobals('keyring') === 'env';
  if (path !== undefined && !(fromEnv && path === '')) {
    if (path === '') throw new UsageError('--keyring: the file name is empty');
    return { kind: 'file', path, from: fromEnv ? KEYRING_FILE_ENV : '--keyring' };
  }
  const text = env[KEYRING_ENV];
  if (text !== undefined && text !== '') return { kind: 'env', text };
  return undefined;
}

/** Says where a keyring came from, for messages; never shows the keyring itself. */
export function describeKeyringSource(source: KeyringSource): string {
  return source.kind === 'file' ? `keyring file ${source.path} (${source.from})` : `keyring in $${KEYRING_ENV}`;
}

/**
 * Reads and checks the keyring `source` names. Errors are ConfigErrors that say where the
 * keyring came from and, for a bad key, the JSON path of the field (`keyring.keys[0].secret`),
 * never a key's value. A keyring file that the group or others may read draws a warning.
 */
export async function loadKeyring(source: KeyringSource, out: Output): Promise<Keyring> {
  const where = describeKeyringSource(source);
  let text: string;
  if (source.kind === 'file') {
    const file = await readKeyFile(source.path, 'keyring file');
    warnIfExposed(file, 'keyring file', out);
    text = file.bytes.toString('utf8');
  } else text = source.text;
  try {
    return loadKeyringFromJson(text);
  } catch (err) {
    if (err instanceof ConfigError) {
      // loadKeyringFromJson's messages name the field and leave values out; keep it that way.
      throw new ConfigError(`${where}: ${err.message}`, { data: err.data });
    }
    throw new ConfigError(`${where}: could not be loaded (${(err as Error)?.name ?? 'error'})`);
  }
}
