import { ConfigError, type JwtAlgorithm, type JwtKeyInput } from '@agentbus/core';
import type { Output } from '../output.js';
import { readKeyFile, warnIfExposed } from './key-file.js';

/** The JWT algorithms `agentbus token` accepts for `--alg` (the core's list; `none` is not one). */
export const JWT_ALGORITHMS: readonly JwtAlgorithm[] = Object.freeze([
  'HS256',
  'HS384',
  'HS512',
  'RS256',
  'RS384',
  'RS512',
  'PS256',
  'PS384',
  'PS512',
  'ES256',
  'ES384',
  'ES512',
  'EdDSA',
  'Ed25519',
]);

/** A key read from a `--key` file, ready for createJwtIssuer or createJwtVerifier. */
export interface JwtKeyFile {
  readonly key: JwtKeyInput;
  /** The JWK's `kid`, when the file is a JWK that has one. */
  readonly kid?: string;
}

function isHmac(alg: JwtAlgorithm): boolean {
  return alg.startsWith('HS');
}

/**
 * The secret in a raw HMAC secret file: its bytes, except that a text file loses one trailing
 * newline, so that a secret written with `echo` works. A file that is not plain UTF-8 text
 * (random bytes from `openssl rand 64 > file`) is taken byte for byte.
 */
export function rawSecret(bytes: Buffer): Buffer {
  const text = bytes.toString('utf8');
  // Control bytes other than tab, LF and CR mean binary; so does what does not round-trip as UTF-8.
  const control = bytes.some((b) => (b < 0x20 && b !== 0x09 && b !== 0x0a && b !== 0x0d) || b === 0x7f);
  if (control || !Buffer.from(text, 'utf8').equals(bytes)) return bytes;
  const end = text.endsWith('\r\n') ? 2 : text.endsWith('\n') ? 1 : 0;
  return bytes.subarray(0, bytes.length - end);
}

/**
 * Reads a JWT key file: PEM (`-----BEGIN …`), a JWK as JSON (`{ "kty": … }`), or, for the HS
 * algorithms, the raw secret ({@link rawSecret}). Errors name the file, never its content. A
 * file holding a secret or private key that the group or others may read draws a warning.
 */
export async function readJwtKeyFile(path: string, alg: JwtAlgorithm, out: Output): Promise<JwtKeyFile> {
  const file = await readKeyFile(path, 'key file');
  const text = file.bytes.toString('utf8');
  const start = text.trimStart();
  let result: JwtKeyFile;
  let secret: boolean;
  if (start.startsWith('-----BEGIN')) {
    result = { key: text };
    secret = isHmac(alg) || /-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(text);
  } else if (start.startsWith('{')) {
    let jwk: unknown;
    try {
      jwk = JSON.parse(text);
    } catch {
      // The parser's message may quote the file, key material included.
      throw new ConfigError(`key file ${path}: looks like JSON but is not valid JSON (a JWK is expected)`);
    }
    if (
      typeof jwk !== 'object' ||
      jwk === null ||
      Array.isArray(jwk) ||
      typeof (jwk as { kty?: unknown }).kty !== 'string'
    ) {
      throw new ConfigError(`key file ${path}: a JSON key file must be one JWK, an object with a "kty" member`);
    }
    const { kid, kty, d, k } = jwk as { kid?: unknown; kty: string; d?: unknown; k?: unknown };
    result = { key: jwk as JwtKeyInput, ...(typeof kid === 'string' && kid !== '' ? { kid } : {}) };
    secret = kty === 'oct' || d !== undefined || k !== undefined;
  } else if (isHmac(alg)) {
    result = { key: new Uint8Array(rawSecret(file.bytes)) };
    secret = true;
  } else {
    throw new ConfigError(
      `key file ${path}: ${alg} needs a PEM or JWK key; a raw secret file suits the HS algorithms only`,
    );
  }
  if (secret) warnIfExposed(file, 'key file', out);
  return result;
}

/**
 * A ConfigError from createJwtIssuer/createJwtVerifier, restated for the command line: a key
 * problem names the key file, an option problem the flag. The core's messages never show keys.
 */
export function jwtConfigError(
  err: ConfigError,
  keyFile: string,
  flags: Readonly<Record<string, string>>,
): ConfigError {
  const path = err.path ?? '';
  const reason = path !== '' && err.message.startsWith(`${path}: `) ? err.message.slice(path.length + 2) : err.message;
  if (/^(keys\[\d+\]\.)?key$/.test(path)) return new ConfigError(`key file ${keyFile}: ${reason}`, { data: err.data });
  const flag = flags[path] ?? flags[path.replace(/^keys\[\d+\]\./, '')];
  if (flag !== undefined) return new ConfigError(`${flag}: ${reason}`, { data: err.data });
  return err;
}
