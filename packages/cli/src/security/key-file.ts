import { open } from 'node:fs/promises';
import { ConfigError } from '@agentbus/core';
import type { Output } from '../output.js';

/** What {@link readKeyFile} read: the bytes and the file's permission bits. */
export interface KeyFile {
  readonly path: string;
  readonly bytes: Buffer;
  /** `st_mode & 0o777` of the file that was read. */
  readonly mode: number;
}

/** Key files larger than this are refused unread: no key format comes near it. */
export const MAX_KEY_FILE_BYTES = 1024 * 1024;

/**
 * Reads a file that holds key material. Failures are ConfigErrors that name `what` and the file,
 * never its content. The mode comes from the open file itself, so it is that of what was read.
 */
export async function readKeyFile(path: string, what: string): Promise<KeyFile> {
  if (path.trim() === '') throw new ConfigError(`${what}: the file name is empty`);
  let handle: Awaited<ReturnType<typeof open>> | undefined;
  try {
    handle = await open(path, 'r');
    const stat = await handle.stat();
    if (!stat.isFile()) throw new ConfigError(`${what} ${path}: not a regular file`);
    if (stat.size > MAX_KEY_FILE_BYTES) {
      throw new ConfigError(`${what} ${path}: ${stat.size} bytes is too large for a key file`);
    }
    const bytes = await handle.readFile();
    return { path, bytes, mode: stat.mode & 0o777 };
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    throw new ConfigError(`${what} ${path}: cannot read it (${code ?? (err as Error).message})`);
  } finally {
    await handle?.close();
  }
}

/**
 * Warns on stderr when a file holding a secret or private key may be read by the group or by
 * others (`mode & 0o077`), as ssh does for private keys. A warning, not a refusal: secrets
 * mounted by container runtimes are often 0644 and a refusal there would only teach people to
 * pass keys through the environment instead. No check on Windows, where modes mean little.
 */
export function warnIfExposed(file: KeyFile, what: string, out: Output, platform = process.platform): void {
  if (platform === 'win32' || (file.mode & 0o077) === 0) return;
  out.note(
    `warning: ${what} ${file.path} is readable or writable by group or others ` +
      `(mode ${file.mode.toString(8).padStart(4, '0')}); restrict it with: chmod 600 ${file.path}`,
  );
}
