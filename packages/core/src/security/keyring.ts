import {
  createHmac,
  createPrivateKey,
  createPublicKey,
  createSecretKey,
  type KeyObject,
  sign as signWith,
  timingSafeEqual,
  verify as verifyWith,
} from 'node:crypto';
import { inspect } from 'node:util';
import { type Clock, systemClock } from '../clock.js';
import { ConfigError, SignatureError } from '../errors.js';

/** The signature algorithms of the signing middleware, as carried in the `x-agentbus-sig-alg` header. */
export type SignatureAlgorithm = 'hmac-sha256' | 'ed25519';

export const SIGNATURE_ALGORITHMS: readonly SignatureAlgorithm[] = Object.freeze(['hmac-sha256', 'ed25519']);

/** HMAC secrets shorter than this are refused: RFC 2104 asks for at least the hash length. */
export const MIN_HMAC_SECRET_BYTES = 32;

/**
 * Key material as given to a {@link Keyring}. A string that is not PEM must say its encoding,
 * `base64:…`, `base64url:…` or `hex:…` (a bare string is ambiguous: text or bytes?).
 */
export type KeyMaterial = KeyObject | Uint8Array | string;

/** One key of a {@link Keyring}. */
export interface SigningKeySpec {
  /** Key id, carried in every signature it makes (printable ASCII, no spaces, ≤ 256 characters). */
  readonly kid: string;
  readonly algorithm: SignatureAlgorithm;
  /** `hmac-sha256`: the shared secret, at least 32 bytes (a secret KeyObject, bytes, or an encoded string). */
  readonly secret?: KeyMaterial;
  /**
   * `ed25519`: the private key (a private KeyObject, PKCS#8 PEM, or the 32-byte raw seed); a key
   * with one signs, and verifies with its public half.
   */
  readonly privateKey?: KeyMaterial;
  /** `ed25519`: the public key (a KeyObject, SPKI PEM, or 32 raw bytes); enough to verify. */
  readonly publicKey?: KeyMaterial;
  /** The key is valid from this time (Date, epoch ms or RFC 3339); absent: always was. */
  readonly notBefore?: Date | number | string;
  /** The key is valid until this time, inclusive; absent: no end. */
  readonly notAfter?: Date | number | string;
  /**
   * The senders (envelope `source`) this key may sign for; absent: any. A signer refuses to sign
   * for another source, and a verifier refuses a message claiming one (`wrong-source`): holding
   * a key then proves who is speaking, not just that a key holder is.
   */
  readonly sources?: readonly string[];
}

/** What may be shown of a key: everything but its material. */
export interface SigningKeyInfo {
  readonly kid: string;
  readonly algorithm: SignatureAlgorithm;
  readonly canSign: boolean;
  readonly notBefore?: string;
  readonly notAfter?: string;
  readonly sources?: readonly string[];
}

const KID = /^[\x21-\x7e]{1,256}$/;
const ED25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');
const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

function timeMs(value: Date | number | string | undefined, path: string, absent: number): number {
  if (value === undefined) return absent;
  const ms = value instanceof Date ? value.getTime() : typeof value === 'number' ? value : Date.parse(value);
  if (!Number.isFinite(ms)) throw new ConfigError('must be a Date, epoch ms or an RFC 3339 time', { path });
  return ms;
}

/** Bytes of an encoded string; never puts the value into an error message. */
function decodeString(text: string, path: string): Buffer {
  const i = text.indexOf(':');
  const encoding = i < 0 ? '' : text.slice(0, i);
  const body = text.slice(i + 1);
  const ok =
    (encoding === 'base64' && /^[A-Za-z0-9+/]*={0,2}$/.test(body)) ||
    (encoding === 'base64url' && /^[A-Za-z0-9_-]*$/.test(body)) ||
    (encoding === 'hex' && /^(?:[0-9a-fA-F]{2})*$/.test(body));
  if (!ok) {
    throw new ConfigError(
      "a key string must be PEM or say its encoding: 'base64:…', 'base64url:…' or 'hex:…' (value not shown)",
      { path },
    );
  }
  return Buffer.from(body, encoding as BufferEncoding);
}

function isPem(text: string): boolean {
  return text.trimStart().startsWith('-----BEGIN ');
}

function isKeyObject(value: unknown): value is KeyObject {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as KeyObject).export === 'function' &&
    typeof (value as KeyObject).type === 'string'
  );
}

function bytesOf(value: KeyMaterial, path: string): Buffer {
  if (typeof value === 'string') return decodeString(value, path);
  if (value instanceof Uint8Array) return Buffer.from(value); // a copy: the caller may wipe theirs
  throw new ConfigError('must be a KeyObject, bytes or an encoded string', { path });
}

function hmacKey(value: KeyMaterial | undefined, path: string): KeyObject {
  if (value === undefined) throw new ConfigError('an hmac-sha256 key needs a secret', { path });
  let key: KeyObject;
  if (isKeyObject(value)) {
    if (value.type !== 'secret') throw new ConfigError(`must be a secret key, got a ${value.type} key`, { path });
    key = value;
  } else key = createSecretKey(bytesOf(value, path));
  if ((key.symmetricKeySize ?? 0) < MIN_HMAC_SECRET_BYTES) {
    throw new ConfigError(`must be at least ${MIN_HMAC_SECRET_BYTES} bytes, got ${key.symmetricKeySize}`, { path });
  }
  return key;
}

function assertEd25519(key: KeyObject, path: string): KeyObject {
  if (key.asymmetricKeyType !== 'ed25519') {
    throw new ConfigError(`must be an Ed25519 key, got ${key.asymmetricKeyType ?? key.type}`, { path });
  }
  return key;
}

function edPrivateKey(value: KeyMaterial, path: string): KeyObject {
  if (isKeyObject(value)) {
    if (value.type !== 'private') throw new ConfigError(`must be a private key, got a ${value.type} key`, { path });
    return assertEd25519(value, path);
  }
  try {
    if (typeof value === 'string' && isPem(value)) return assertEd25519(createPrivateKey(value), path);
    const seed = bytesOf(value, path);
    if (seed.length !== 32)
      throw new ConfigError(`a raw Ed25519 private key is 32 bytes, got ${seed.length}`, { path });
    return createPrivateKey({ key: Buffer.concat([ED25519_PKCS8_PREFIX, seed]), format: 'der', type: 'pkcs8' });
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    throw new ConfigError('is not a readable Ed25519 private key', { path });
  }
}

function edPublicKey(value: KeyMaterial, path: string): KeyObject {
  if (isKeyObject(value)) {
    if (value.type === 'secret') throw new ConfigError('must be a public key, got a secret key', { path });
    return assertEd25519(value.type === 'private' ? createPublicKey(value) : value, path);
  }
  try {
    if (typeof value === 'string' && isPem(value)) return assertEd25519(createPublicKey(value), path);
    const raw = bytesOf(value, path);
    if (raw.length !== 32) throw new ConfigError(`a raw Ed25519 public key is 32 bytes, got ${raw.length}`, { path });
    return createPublicKey({ key: Buffer.concat([ED25519_SPKI_PREFIX, raw]), format: 'der', type: 'spki' });
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    throw new ConfigError('is not a readable Ed25519 public key', { path });
  }
}

function samePublicKey(a: KeyObject, b: KeyObject): boolean {
  return a.export({ format: 'der', type: 'spki' }).equals(b.export({ format: 'der', type: 'spki' }));
}

/**
 * A key of a {@link Keyring}: its id, algorithm and validity window, and its material, which
 * it never shows (`toJSON`, `util.inspect` and `String()` give {@link SigningKeyInfo} only).
 * Immutable: {@link SigningKey.until} makes a copy with an earlier end.
 */
export class SigningKey {
  readonly kid: string;
  readonly algorithm: SignatureAlgorithm;
  /** Start of the validity window (epoch ms, inclusive); -Infinity when open. */
  readonly notBeforeMs: number;
  /** End of the validity window (epoch ms, inclusive); Infinity when open. */
  readonly notAfterMs: number;
  /** The senders this key may sign for (see {@link SigningKeySpec.sources}); undefined: any. */
  readonly sources: readonly string[] | undefined;
  readonly #signing: KeyObject | undefined;
  readonly #verifying: KeyObject;

  /** Reads and checks a spec; throws ConfigError naming the field (`path` prefixes it). */
  static from(spec: SigningKeySpec, path = 'key'): SigningKey {
    if (typeof spec !== 'object' || spec === null) throw new ConfigError('must be a key spec object', { path });
    if (typeof spec.kid !== 'string' || !KID.test(spec.kid)) {
      throw new ConfigError('must be 1–256 printable ASCII characters without spaces', { path: `${path}.kid` });
    }
    const notBeforeMs = timeMs(spec.notBefore, `${path}.notBefore`, Number.NEGATIVE_INFINITY);
    const notAfterMs = timeMs(spec.notAfter, `${path}.notAfter`, Number.POSITIVE_INFINITY);
    if (notAfterMs < notBeforeMs) throw new ConfigError('is before notBefore', { path: `${path}.notAfter` });
    const sources = sourcesOf(spec.sources, `${path}.sources`);
    if (spec.algorithm === 'hmac-sha256') {
      if (spec.privateKey !== undefined || spec.publicKey !== undefined) {
        throw new ConfigError('an hmac-sha256 key takes a secret, not privateKey/publicKey', { path });
      }
      const key = hmacKey(spec.secret, `${path}.secret`);
      return new SigningKey(spec.kid, 'hmac-sha256', key, key, notBeforeMs, notAfterMs, sources);
    }
    if (spec.algorithm === 'ed25519') {
      if (spec.secret !== undefined)
        throw new ConfigError('an ed25519 key takes privateKey/publicKey, not a secret', { path });
      const priv = spec.privateKey === undefined ? undefined : edPrivateKey(spec.privateKey, `${path}.privateKey`);
      const pub = spec.publicKey === undefined ? undefined : edPublicKey(spec.publicKey, `${path}.publicKey`);
      if (priv === undefined && pub === undefined) {
        throw new ConfigError('an ed25519 key needs a privateKey or a publicKey', { path });
      }
      const derived = priv === undefined ? undefined : createPublicKey(priv);
      if (pub !== undefined && derived !== undefined && !samePublicKey(pub, derived)) {
        throw new ConfigError('does not belong to privateKey', { path: `${path}.publicKey` });
      }
      return new SigningKey(spec.kid, 'ed25519', priv, (pub ?? derived) as KeyObject, notBeforeMs, notAfterMs, sources);
    }
    throw new ConfigError(`must be one of ${SIGNATURE_ALGORITHMS.join(', ')}`, { path: `${path}.algorithm` });
  }

  private constructor(
    kid: string,
    algorithm: SignatureAlgorithm,
    signing: KeyObject | undefined,
    verifying: KeyObject,
    notBeforeMs: number,
    notAfterMs: number,
    sources: readonly string[] | undefined,
  ) {
    this.kid = kid;
    this.sources = sources;
    this.algorithm = algorithm;
    this.#signing = signing;
    this.#verifying = verifying;
    this.notBeforeMs = notBeforeMs;
    this.notAfterMs = notAfterMs;
    Object.freeze(this);
  }

  /** Whether this key holds what signing needs (an HMAC secret, an Ed25519 private key). */
  get canSign(): boolean {
    return this.#signing !== undefined;
  }

  /** Whether `ms` lies inside the validity window. */
  validAt(ms: number): boolean {
    return ms >= this.notBeforeMs && ms <= this.notAfterMs;
  }

  /** A copy of this key whose window ends at `notAfterMs` at the latest. */
  until(notAfterMs: number): SigningKey {
    const end = Math.max(this.notBeforeMs, Math.min(this.notAfterMs, notAfterMs));
    return new SigningKey(
      this.kid,
      this.algorithm,
      this.#signing,
      this.#verifying,
      this.notBeforeMs,
      end,
      this.sources,
    );
  }

  /** Whether this key may sign for `source`. */
  signsFor(source: string): boolean {
    return this.sources === undefined || this.sources.includes(source);
  }

  /** The raw signature of `bytes`; throws SignatureError if this key cannot sign. */
  sign(bytes: Uint8Array): Buffer {
    const key = this.#signing;
    if (key === undefined) throw new SignatureError(`key ${this.kid} cannot sign (no private key)`);
    if (this.algorithm === 'hmac-sha256') return createHmac('sha256', key).update(bytes).digest();
    return signWith(null, bytes, key);
  }

  /** Whether `signature` is this key's signature of `bytes` (constant-time for HMAC). */
  verify(bytes: Uint8Array, signature: Uint8Array): boolean {
    if (this.algorithm === 'hmac-sha256') {
      const expected = createHmac('sha256', this.#verifying).update(bytes).digest();
      // timingSafeEqual needs equal lengths; the length of an HMAC-SHA256 is public anyway.
      return signature.length === expected.length && timingSafeEqual(expected, signature);
    }
    return verifyWith(null, bytes, this.#verifying, signature);
  }

  toJSON(): SigningKeyInfo {
    return {
      kid: this.kid,
      algorithm: this.algorithm,
      canSign: this.canSign,
      ...(Number.isFinite(this.notBeforeMs) ? { notBefore: new Date(this.notBeforeMs).toISOString() } : {}),
      ...(Number.isFinite(this.notAfterMs) ? { notAfter: new Date(this.notAfterMs).toISOString() } : {}),
      ...(this.sources ? { sources: this.sources } : {}),
    };
  }

  toString(): string {
    return `SigningKey(${this.kid}, ${this.algorithm})`;
  }

  [inspect.custom](): string {
    return `SigningKey ${inspect(this.toJSON())}`;
  }
}

export interface KeyringOptions {
  readonly keys?: readonly (SigningKeySpec | SigningKey)[];
  /** Kid of the key that signs; it must be able to sign. Absent: this keyring only verifies. */
  readonly active?: string;
  /** Kids refused from the start (emergency revocation), whether in `keys` or not. */
  readonly revoked?: Iterable<string>;
  /** Time for {@link Keyring.rotate} and {@link Keyring.signingKey} without an explicit time. */
  readonly clock?: Clock;
}

export interface RotateOptions {
  /** How long signatures of the key being replaced are still accepted, from now (ms, ≥ 0). */
  readonly graceMs: number;
}

/** Why a key was refused for verification, as machine-readable `data.check` of the SignatureError. */
export type KeyCheck = 'unknown-key' | 'revoked-key' | 'algorithm-mismatch' | 'key-not-yet-valid' | 'key-expired';

function refuse(check: KeyCheck | 'no-signing-key', message: string, kid?: string): never {
  throw new SignatureError(message, { data: { check, ...(kid === undefined ? {} : { kid }) } });
}

/**
 * Signing and verification keys by id: one active key signs; every key verifies inside its
 * validity window; a revoked kid is refused always, even inside its window and even when it is
 * the active one (signing then fails until another key is activated).
 *
 * Rotation: {@link Keyring.rotate} adds a new key, makes it the active one and ends the old
 * one's window `graceMs` from now, so that messages it signed shortly before still verify.
 * Across processes the same is done declaratively: give every verifier the new key first, then
 * switch the publishers' `active` and give the old key a `notAfter`.
 *
 * Mutable on purpose: the signing middleware reads it per message, so a rotation or revocation
 * takes effect at once. Never shows key material (toJSON/inspect list kids and windows only).
 */
export class Keyring {
  readonly #keys = new Map<string, SigningKey>();
  readonly #revoked = new Set<string>();
  readonly #clock: Clock;
  #active: string | undefined;

  constructor(options: KeyringOptions = {}) {
    this.#clock = options.clock ?? systemClock;
    (options.keys ?? []).forEach((k, i) => {
      this.#put(k instanceof SigningKey ? k : SigningKey.from(k, `keys[${i}]`), `keys[${i}]`);
    });
    for (const kid of options.revoked ?? []) this.revoke(kid);
    if (options.active !== undefined) this.#activate(options.active, 'active');
  }

  #put(key: SigningKey, path: string): SigningKey {
    if (this.#keys.has(key.kid)) throw new ConfigError(`duplicate kid ${JSON.stringify(key.kid)}`, { path });
    this.#keys.set(key.kid, key);
    return key;
  }

  #activate(kid: string, path: string): void {
    const key = this.#keys.get(kid);
    if (key === undefined) throw new ConfigError(`no key ${JSON.stringify(kid)} in the keyring`, { path });
    if (!key.canSign)
      throw new ConfigError(`key ${JSON.stringify(kid)} cannot sign (no secret or private key)`, { path });
    if (this.#revoked.has(kid)) throw new ConfigError(`key ${JSON.stringify(kid)} is revoked`, { path });
    this.#active = kid;
  }

  /** Adds a key (spec or SigningKey); ConfigError if its kid is taken. */
  add(key: SigningKeySpec | SigningKey): SigningKey {
    return this.#put(key instanceof SigningKey ? key : SigningKey.from(key), 'key');
  }

  /** Makes `kid` the signing key. */
  activate(kid: string): void {
    this.#activate(kid, 'active');
  }

  /**
   * Adds `key`, makes it the active key, and lets the previously active key verify only for
   * `graceMs` more (its window ends then, or earlier if it already did). Returns the new key.
   */
  rotate(key: SigningKeySpec | SigningKey, options: RotateOptions): SigningKey {
    const graceMs = options?.graceMs;
    if (typeof graceMs !== 'number' || !(graceMs >= 0) || !Number.isFinite(graceMs)) {
      throw new ConfigError(`must be a number >= 0, got ${String(graceMs)}`, { path: 'graceMs' });
    }
    const previous = this.#active === undefined ? undefined : this.#keys.get(this.#active);
    const added = this.add(key);
    try {
      this.#activate(added.kid, 'key');
    } catch (err) {
      this.#keys.delete(added.kid);
      throw err;
    }
    if (previous !== undefined) this.#keys.set(previous.kid, previous.until(this.#clock.now() + graceMs));
    return added;
  }

  /** Refuses `kid` from now on, inside its window too (it need not be in the keyring). */
  revoke(kid: string): void {
    if (typeof kid !== 'string' || kid === '') throw new ConfigError('must be a non-empty string', { path: 'revoked' });
    this.#revoked.add(kid);
  }

  isRevoked(kid: string): boolean {
    return this.#revoked.has(kid);
  }

  get(kid: string): SigningKey | undefined {
    return this.#keys.get(kid);
  }

  /** Kid of the signing key, if any. */
  get active(): string | undefined {
    return this.#active;
  }

  get revoked(): readonly string[] {
    return [...this.#revoked];
  }

  keys(): SigningKey[] {
    return [...this.#keys.values()];
  }

  /** The key to sign with at `nowMs` (default: the keyring's clock); SignatureError if there is none usable. */
  signingKey(nowMs: number = this.#clock.now()): SigningKey {
    const kid = this.#active;
    if (kid === undefined) return refuse('no-signing-key', 'the keyring has no active signing key');
    if (this.#revoked.has(kid)) return refuse('revoked-key', `the active key ${kid} is revoked`, kid);
    const key = this.#keys.get(kid) as SigningKey;
    if (nowMs < key.notBeforeMs) return refuse('key-not-yet-valid', `the active key ${kid} is not valid yet`, kid);
    if (nowMs > key.notAfterMs) return refuse('key-expired', `the active key ${kid} has expired`, kid);
    return key;
  }

  /**
   * The key that may verify a signature claiming `kid` and `algorithm`, made at `signedAtMs`
   * and checked at `nowMs`: known, not revoked, of exactly the claimed algorithm (the message
   * never chooses the algorithm for a key), valid when it signed and still valid now. Otherwise
   * a SignatureError whose `data.check` says which check failed ({@link KeyCheck}).
   */
  verificationKey(kid: string, algorithm: string, signedAtMs: number, nowMs: number): SigningKey {
    const key = this.#keys.get(kid);
    if (key === undefined) return refuse('unknown-key', `unknown key id ${JSON.stringify(kid)}`, kid);
    if (this.#revoked.has(kid)) return refuse('revoked-key', `key ${kid} is revoked`, kid);
    if (key.algorithm !== algorithm) {
      return refuse(
        'algorithm-mismatch',
        `key ${kid} is ${key.algorithm}, the signature claims ${JSON.stringify(algorithm)}`,
        kid,
      );
    }
    if (signedAtMs < key.notBeforeMs)
      return refuse('key-not-yet-valid', `key ${kid} was not valid yet when it signed`, kid);
    if (signedAtMs > key.notAfterMs || nowMs > key.notAfterMs)
      return refuse('key-expired', `key ${kid} has expired`, kid);
    return key;
  }

  toJSON(): { active?: string; revoked: string[]; keys: SigningKeyInfo[] } {
    return {
      ...(this.#active === undefined ? {} : { active: this.#active }),
      revoked: this.revoked as string[],
      keys: this.keys().map((k) => k.toJSON()),
    };
  }

  [inspect.custom](): string {
    return `Keyring ${inspect(this.toJSON(), { depth: 4 })}`;
  }
}

/**
 * Builds a keyring from JSON text, e.g. what the CLI read from a file or an environment
 * variable (library code never reads either itself):
 *
 * ```json
 * {
 *   "active": "k2",
 *   "revoked": ["k0"],
 *   "keys": [
 *     { "kid": "k1", "algorithm": "hmac-sha256", "secret": "base64:…", "notAfter": "2026-02-01T00:00:00Z" },
 *     { "kid": "k2", "algorithm": "ed25519", "privateKey": "-----BEGIN PRIVATE KEY-----\n…" },
 *     { "kid": "peer", "algorithm": "ed25519", "publicKey": "base64url:…" }
 *   ]
 * }
 * ```
 *
 * Secrets and raw keys are strings that say their encoding (`base64:`, `base64url:`, `hex:`);
 * Ed25519 keys may also be PEM. Throws ConfigError naming the field (never showing a secret).
 */
export function loadKeyringFromJson(text: string, options: { readonly clock?: Clock } = {}): Keyring {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    // The parser's message may quote the text, secrets included.
    throw new ConfigError('is not valid JSON', { path: 'keyring' });
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ConfigError('must be a JSON object', { path: 'keyring' });
  }
  const v = value as Record<string, unknown>;
  for (const field of Object.keys(v)) {
    if (field !== 'active' && field !== 'revoked' && field !== 'keys') {
      throw new ConfigError('unknown field', { path: `keyring.${field}` });
    }
  }
  if (!Array.isArray(v.keys)) throw new ConfigError('must be an array', { path: 'keyring.keys' });
  if (v.active !== undefined && typeof v.active !== 'string') {
    throw new ConfigError('must be a kid string', { path: 'keyring.active' });
  }
  if (v.revoked !== undefined && (!Array.isArray(v.revoked) || v.revoked.some((k) => typeof k !== 'string'))) {
    throw new ConfigError('must be an array of kid strings', { path: 'keyring.revoked' });
  }
  const keys = v.keys.map((k: unknown, i: number) => {
    const path = `keyring.keys[${i}]`;
    if (typeof k !== 'object' || k === null || Array.isArray(k)) throw new ConfigError('must be an object', { path });
    const spec = k as Record<string, unknown>;
    for (const field of Object.keys(spec)) {
      if (field === 'sources') continue; // a list of strings, checked by SigningKey.from
      if (!['kid', 'algorithm', 'secret', 'privateKey', 'publicKey', 'notBefore', 'notAfter'].includes(field)) {
        throw new ConfigError('unknown field', { path: `${path}.${field}` });
      }
      if (typeof spec[field] !== 'string') throw new ConfigError('must be a string', { path: `${path}.${field}` });
    }
    return SigningKey.from(spec as unknown as SigningKeySpec, path);
  });
  if (v.active !== undefined) {
    const active = keys.find((k) => k.kid === v.active);
    if (active === undefined) throw new ConfigError(`no key ${JSON.stringify(v.active)}`, { path: 'keyring.active' });
    if (!active.canSign) throw new ConfigError(`key ${active.kid} cannot sign`, { path: 'keyring.active' });
    if ((v.revoked as string[] | undefined)?.includes(active.kid)) {
      throw new ConfigError(`key ${active.kid} is revoked`, { path: 'keyring.active' });
    }
  }
  return new Keyring({
    keys,
    ...(v.active === undefined ? {} : { active: v.active as string }),
    ...(v.revoked === undefined ? {} : { revoked: v.revoked as string[] }),
    ...(options.clock === undefined ? {} : { clock: options.clock }),
  });
}

/** `sources` of a key spec: absent, or a non-empty list of non-empty strings (frozen). */
function sourcesOf(value: unknown, path: string): readonly string[] | undefined {
  if (value === undefined) return undefined;
  if (!Array.isArray(value) || value.length === 0)
    throw new ConfigError('must be a non-empty list of sources', { path });
  value.forEach((v, i) => {
    if (typeof v !== 'string' || v === '')
      throw new ConfigError('must be a non-empty string', { path: `${path}[${i}]` });
  });
  return Object.freeze([...value] as string[]);
}
