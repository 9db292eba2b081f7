import {
  createPrivateKey,
  createPublicKey,
  createSecretKey,
  KeyObject,
  type JsonWebKey as NodeJsonWebKey,
  type webcrypto,
} from 'node:crypto';
import { decodeProtectedHeader, type JWK, type JWTPayload, jwtVerify, SignJWT } from 'jose';
import { type Clock, systemClock } from '../clock.js';
import { ConfigError, UnauthorizedError } from '../errors.js';
import { nonNegativeNumber, positiveInteger, positiveNumber } from '../validate.js';

/**
 * JSON Web Tokens for agents and gateway clients (issue 8): an issuer that signs an identity into
 * a token, and a verifier that turns a token back into an {@link Identity} or refuses it with an
 * {@link UnauthorizedError} whose `data.reason` is a {@link JwtRejectReason}.
 *
 * The verifier trusts nothing the token says about keys: the algorithm must be one the
 * configuration pins, the key comes only from the configured set (by `kid` when the token names
 * one), and a header that brings its own key or points at one (`jwk`, `jku`, `x5u`, `x5c`) is
 * refused before any signature check. Neither side ever fetches anything.
 */

/** Signature algorithms a key can be pinned to (`none` is not one of them). */
export type JwtAlgorithm =
  | 'HS256'
  | 'HS384'
  | 'HS512'
  | 'RS256'
  | 'RS384'
  | 'RS512'
  | 'PS256'
  | 'PS384'
  | 'PS512'
  | 'ES256'
  | 'ES384'
  | 'ES512'
  | 'EdDSA'
  | 'Ed25519';

/**
 * A key as configuration gives it: a `KeyObject`, a Web Crypto `CryptoKey`, a PEM string, a JWK
 * object, or, for the HS algorithms only, the secret itself (bytes, or a string taken as UTF-8).
 */
export type JwtKeyInput = KeyObject | webcrypto.CryptoKey | JWK | Uint8Array | string;

/** Who a verified token speaks for. */
export interface Identity {
  /** The `sub` claim. */
  subject: string;
  /** From the roles claim (`rolesClaim`); empty when the token has none. */
  roles: string[];
  /** From the tenant claim (`tenantClaim`), when the token has one. */
  tenant?: string;
  /** The whole verified claims set, registered claims included. */
  claims: Record<string, unknown>;
}

/** What {@link JwtIssuer.issue} signs; an {@link Identity} returned by a verifier is one. */
export interface JwtIssueInput {
  readonly subject: string;
  readonly roles?: readonly string[];
  readonly tenant?: string;
  /**
   * Further claims. The issuer's own claims (`iss`, `sub`, `aud`, `iat`, `nbf`, `exp`, `jti`, the
   * roles and tenant claims) are always set by the issuer and replace any given here.
   */
  readonly claims?: Readonly<Record<string, unknown>>;
}

export interface JwtIssueOptions {
  /** Lifetime of this token (default the issuer's `defaultTtlMs`); whole seconds count, at least 1 s. */
  readonly ttlMs?: number;
  /** Epoch ms before which the token is not valid (`nbf`); default: no `nbf`. */
  readonly notBeforeMs?: number;
  /** A `jti` claim, e.g. for revocation lists. */
  readonly jti?: string;
}

export interface JwtIssuerOptions {
  /** The signing key: private for RS/PS/ES/EdDSA, the shared secret for HS. */
  readonly key: JwtKeyInput;
  readonly alg: JwtAlgorithm;
  /** Written into the header so that verifiers holding several keys pick this one. */
  readonly kid?: string;
  /** The `iss` claim. */
  readonly issuer: string;
  /** The `aud` claim. */
  readonly audience: string | readonly string[];
  /** Lifetime of a token when `issue` is not given one (default 15 min, or `maxTtlMs` if lower). */
  readonly defaultTtlMs?: number;
  /** Longest lifetime `issue` accepts (default 24 h). */
  readonly maxTtlMs?: number;
  /** Claim the roles go into (default `roles`). */
  readonly rolesClaim?: string;
  /** Claim the tenant goes into (default `tenant`). */
  readonly tenantClaim?: string;
  readonly clock?: Clock;
}

export interface JwtIssuer {
  readonly alg: JwtAlgorithm;
  readonly kid: string | undefined;
  /** Signs a token for `input`; a ConfigError for invalid input (empty subject, bad ttl …). */
  issue(input: JwtIssueInput, options?: JwtIssueOptions): Promise<string>;
}

/** One trusted verification key, pinned to one algorithm. */
export interface JwtVerificationKey {
  /** Tokens naming this `kid` are verified with this key only. */
  readonly kid?: string;
  /** Public key (a private one is reduced to its public half) or, for HS, the shared secret. */
  readonly key: JwtKeyInput;
  readonly alg: JwtAlgorithm;
}

export interface JwtVerifierOptions {
  /** The only keys tokens are ever verified with. `kid`s must be unique. */
  readonly keys: readonly JwtVerificationKey[];
  /**
   * Accepted algorithms: one or an explicit list (default: the keys' algorithms). Every key's
   * algorithm must be in it and every entry must have a key.
   */
  readonly algorithms?: JwtAlgorithm | readonly JwtAlgorithm[];
  /** Accepted `iss` value(s); the claim is required. */
  readonly issuer: string | readonly string[];
  /** Accepted `aud` value(s) (one match suffices); the claim is required. */
  readonly audience: string | readonly string[];
  /** Claim holding the roles, or a path into nested objects, e.g. `['realm_access', 'roles']` (default `roles`). */
  readonly rolesClaim?: string | readonly string[];
  /** Claim holding the tenant (default `tenant`). */
  readonly tenantClaim?: string;
  /** Allowed clock skew for `exp`, `nbf` and `iat`, in seconds (default 5). */
  readonly clockToleranceSec?: number;
  /** Longest lifetime a token may claim: `exp - iat` (or `exp - now` without `iat`). Default: unbounded. */
  readonly maxLifetimeMs?: number;
  /** Refuse tokens without a `kid` header (default false: such tokens are tried against the keys of their algorithm). */
  readonly requireKid?: boolean;
  /** Tokens longer than this are refused unread (default 8192 characters). */
  readonly maxTokenLength?: number;
  readonly clock?: Clock;
}

export interface JwtVerifier {
  /** The identity `token` carries, or an UnauthorizedError with `data.reason`. */
  verify(token: string): Promise<Identity>;
}

/**
 * Why a token was refused (`UnauthorizedError.data.reason`). `algorithm`: `none`, an algorithm
 * outside the configured list, or a `kid` pinned to another algorithm; `untrusted-key-reference`:
 * the header carries or points at a key (`jwk`, `jku`, `x5u`, `x5c`); `invalid-claim`: a claim
 * of the wrong type or an empty `sub` (`data.claim` names it); `lifetime-too-long`: over
 * `maxLifetimeMs`.
 */
export type JwtRejectReason =
  | 'malformed'
  | 'algorithm'
  | 'untrusted-key-reference'
  | 'unknown-kid'
  | 'missing-kid'
  | 'bad-signature'
  | 'expired'
  | 'not-yet-valid'
  | 'missing-exp'
  | 'lifetime-too-long'
  | 'audience'
  | 'issuer'
  | 'invalid-claim';

export const JWT_DEFAULTS = Object.freeze({
  defaultTtlMs: 15 * 60_000,
  maxTtlMs: 24 * 60 * 60_000,
  rolesClaim: 'roles',
  tenantClaim: 'tenant',
  clockToleranceSec: 5,
  maxTokenLength: 8192,
});

// What a key must be for each algorithm; RSA keys below 2048 bits are refused (as jose does).
type KeySpec =
  | { readonly kind: 'secret'; readonly minBytes: number; readonly hash: string }
  | { readonly kind: 'rsa'; readonly pss: boolean; readonly hash: string }
  | { readonly kind: 'ec'; readonly curve: string; readonly webCurve: string }
  | { readonly kind: 'ed25519' };

const KEY_SPECS: Readonly<Record<JwtAlgorithm, KeySpec>> = Object.freeze({
  HS256: { kind: 'secret', minBytes: 32, hash: 'SHA-256' },
  HS384: { kind: 'secret', minBytes: 48, hash: 'SHA-384' },
  HS512: { kind: 'secret', minBytes: 64, hash: 'SHA-512' },
  RS256: { kind: 'rsa', pss: false, hash: 'SHA-256' },
  RS384: { kind: 'rsa', pss: false, hash: 'SHA-384' },
  RS512: { kind: 'rsa', pss: false, hash: 'SHA-512' },
  PS256: { kind: 'rsa', pss: true, hash: 'SHA-256' },
  PS384: { kind: 'rsa', pss: true, hash: 'SHA-384' },
  PS512: { kind: 'rsa', pss: true, hash: 'SHA-512' },
  ES256: { kind: 'ec', curve: 'prime256v1', webCurve: 'P-256' },
  ES384: { kind: 'ec', curve: 'secp384r1', webCurve: 'P-384' },
  ES512: { kind: 'ec', curve: 'secp521r1', webCurve: 'P-521' },
  EdDSA: { kind: 'ed25519' },
  Ed25519: { kind: 'ed25519' },
});

// A header member that brings or points at a key: never honoured, so refused outright.
const KEY_REFERENCE_HEADERS = ['jwk', 'jku', 'x5u', 'x5c'] as const;
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*$/;
const MIN_RSA_BITS = 2048;

function reject(reason: JwtRejectReason, message: string, extra?: { claim?: string }): UnauthorizedError {
  return new UnauthorizedError(`token refused: ${message}`, { data: { reason, ...extra } });
}

function assertAlgorithm(alg: unknown, path: string): JwtAlgorithm {
  if (typeof alg !== 'string' || !Object.hasOwn(KEY_SPECS, alg)) {
    throw new ConfigError(`must be one of ${Object.keys(KEY_SPECS).join(', ')}, got ${String(alg)}`, { path });
  }
  return alg as JwtAlgorithm;
}

function nonEmptyString(value: unknown, path: string): string {
  if (typeof value !== 'string' || value === '') throw new ConfigError('must be a non-empty string', { path });
  return value;
}

function stringList(value: unknown, path: string): string[] {
  const list = typeof value === 'string' ? [value] : value;
  if (!Array.isArray(list) || list.length === 0 || list.some((v) => typeof v !== 'string' || v === '')) {
    throw new ConfigError('must be a non-empty string or a non-empty array of them', { path });
  }
  return [...list];
}

function roleList(value: unknown, path: string): string[] {
  if (!Array.isArray(value) || value.some((v) => typeof v !== 'string' || v === '')) {
    throw new ConfigError('must be an array of non-empty strings', { path });
  }
  return [...value];
}

function isCryptoKey(value: unknown): value is webcrypto.CryptoKey {
  return typeof value === 'object' && value !== null && Object.prototype.toString.call(value) === '[object CryptoKey]';
}

function isJwk(value: unknown): value is JWK {
  return (
    typeof value === 'object' &&
    value !== null &&
    !(value instanceof Uint8Array) &&
    typeof (value as { kty?: unknown }).kty === 'string'
  );
}

/**
 * Turns configured key material into a KeyObject of the type `use` needs and checks that it fits
 * `alg`, so that a wrong key is a ConfigError at construction rather than a failure per token.
 * Messages name the option path, never the key.
 */
function importKey(input: unknown, alg: JwtAlgorithm, use: 'sign' | 'verify', path: string): KeyObject {
  const spec = KEY_SPECS[alg];
  let key: KeyObject;
  try {
    if (input instanceof KeyObject) key = input;
    else if (isCryptoKey(input)) key = KeyObject.from(input);
    else if (spec.kind === 'secret') {
      if (typeof input === 'string') {
        // A PEM given as an HMAC secret is the algorithm-confusion mistake; never accept it.
        if (input.includes('-----BEGIN')) throw new ConfigError(`a PEM key cannot be an ${alg} secret`, { path });
        key = createSecretKey(Buffer.from(input, 'utf8'));
      } else if (input instanceof Uint8Array) key = createSecretKey(Buffer.from(input));
      else if (isJwk(input) && input.kty === 'oct' && typeof input.k === 'string') {
        key = createSecretKey(Buffer.from(input.k, 'base64url'));
      } else throw new ConfigError(`must be a secret (bytes, string or oct JWK) for ${alg}`, { path });
    } else if (typeof input === 'string') {
      if (!input.includes('-----BEGIN')) throw new ConfigError(`must be a PEM key for ${alg}`, { path });
      key = use === 'sign' ? createPrivateKey(input) : createPublicKey(input);
    } else if (isJwk(input)) {
      const jwk = input as NodeJsonWebKey;
      key =
        use === 'sign' ? createPrivateKey({ key: jwk, format: 'jwk' }) : createPublicKey({ key: jwk, format: 'jwk' });
    } else throw new ConfigError(`must be a KeyObject, CryptoKey, PEM string or JWK for ${alg}`, { path });
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    // The cause of a failed import may quote the input; it is left out on purpose.
    throw new ConfigError(`could not be read as a key for ${alg}`, { path });
  }
  if (use === 'verify' && key.type === 'private') key = createPublicKey(key);
  const wantType = spec.kind === 'secret' ? 'secret' : use === 'sign' ? 'private' : 'public';
  if (key.type !== wantType)
    throw new ConfigError(`must be a ${wantType} key for ${alg}, got a ${key.type} key`, { path });
  checkKeyFitsAlgorithm(key, spec, alg, path);
  return key;
}

function checkKeyFitsAlgorithm(key: KeyObject, spec: KeySpec, alg: JwtAlgorithm, path: string): void {
  const details = key.asymmetricKeyDetails;
  switch (spec.kind) {
    case 'secret':
      if ((key.symmetricKeySize ?? 0) < spec.minBytes) {
        throw new ConfigError(`an ${alg} secret must be at least ${spec.minBytes} bytes`, { path });
      }
      return;
    case 'rsa':
      if (key.asymmetricKeyType !== 'rsa') throw new ConfigError(`must be an RSA key for ${alg}`, { path });
      if ((details?.modulusLength ?? 0) < MIN_RSA_BITS) {
        throw new ConfigError(`an RSA key must be at least ${MIN_RSA_BITS} bits`, { path });
      }
      return;
    case 'ec':
      if (key.asymmetricKeyType !== 'ec' || details?.namedCurve !== spec.curve) {
        throw new ConfigError(`must be an EC ${spec.webCurve} key for ${alg}`, { path });
      }
      return;
    case 'ed25519':
      if (key.asymmetricKeyType !== 'ed25519') throw new ConfigError(`must be an Ed25519 key for ${alg}`, { path });
      return;
  }
}

/** Creates an issuer of signed tokens; validates its options (and the key) at once. */
export function createJwtIssuer(options: JwtIssuerOptions): JwtIssuer {
  if (typeof options !== 'object' || options === null) throw new ConfigError('must be an object', { path: 'options' });
  const alg = assertAlgorithm(options.alg, 'alg');
  const key = importKey(options.key, alg, 'sign', 'key');
  const kid = options.kid === undefined ? undefined : nonEmptyString(options.kid, 'kid');
  const issuer = nonEmptyString(options.issuer, 'issuer');
  const audience = stringList(options.audience, 'audience');
  const maxTtlMs = positiveNumber(options.maxTtlMs ?? JWT_DEFAULTS.maxTtlMs, 'maxTtlMs');
  const defaultTtlMs = ttl(
    options.defaultTtlMs ?? Math.min(JWT_DEFAULTS.defaultTtlMs, maxTtlMs),
    maxTtlMs,
    'defaultTtlMs',
  );
  const rolesClaim = nonEmptyString(options.rolesClaim ?? JWT_DEFAULTS.rolesClaim, 'rolesClaim');
  const tenantClaim = nonEmptyString(options.tenantClaim ?? JWT_DEFAULTS.tenantClaim, 'tenantClaim');
  const clock = options.clock ?? systemClock;
  const header = { alg, typ: 'JWT', ...(kid === undefined ? {} : { kid }) };

  return Object.freeze({
    alg,
    kid,
    async issue(input: JwtIssueInput, issueOptions: JwtIssueOptions = {}): Promise<string> {
      const subject = nonEmptyString(input?.subject, 'issue.subject');
      const roles = input.roles === undefined ? undefined : roleList(input.roles, 'issue.roles');
      const tenant = input.tenant === undefined ? undefined : nonEmptyString(input.tenant, 'issue.tenant');
      const lifetimeMs = ttl(issueOptions.ttlMs ?? defaultTtlMs, maxTtlMs, 'issue.ttlMs');
      const iat = Math.floor(clock.now() / 1000);
      const claims: JWTPayload = { ...input.claims };
      for (const name of ['iss', 'sub', 'aud', 'iat', 'nbf', 'exp', 'jti', rolesClaim, tenantClaim])
        delete claims[name];
      if (roles !== undefined) claims[rolesClaim] = roles;
      if (tenant !== undefined) claims[tenantClaim] = tenant;
      const jwt = new SignJWT(claims)
        .setProtectedHeader(header)
        .setIssuer(issuer)
        .setSubject(subject)
        .setAudience(audience.length === 1 ? audience[0]! : audience)
        .setIssuedAt(iat)
        .setExpirationTime(iat + Math.floor(lifetimeMs / 1000));
      if (issueOptions.notBeforeMs !== undefined) {
        jwt.setNotBefore(Math.floor(nonNegativeNumber(issueOptions.notBeforeMs, 'issue.notBeforeMs') / 1000));
      }
      if (issueOptions.jti !== undefined) jwt.setJti(nonEmptyString(issueOptions.jti, 'issue.jti'));
      return jwt.sign(key);
    },
  });
}

function ttl(value: unknown, maxTtlMs: number, path: string): number {
  const ms = positiveNumber(value, path);
  if (ms < 1000) throw new ConfigError('must be at least 1000 ms (tokens count whole seconds)', { path });
  if (ms > maxTtlMs) throw new ConfigError(`must be at most maxTtlMs (${maxTtlMs} ms)`, { path });
  return ms;
}

interface TrustedKey {
  readonly kid: string | undefined;
  readonly alg: JwtAlgorithm;
  readonly key: KeyObject;
}

/** Creates a verifier over a fixed, local key set; validates its options (and keys) at once. */
export function createJwtVerifier(options: JwtVerifierOptions): JwtVerifier {
  if (typeof options !== 'object' || options === null) throw new ConfigError('must be an object', { path: 'options' });
  if (!Array.isArray(options.keys) || options.keys.length === 0) {
    throw new ConfigError('must be a non-empty array of keys', { path: 'keys' });
  }
  const keys: TrustedKey[] = [];
  const byKid = new Map<string, TrustedKey>();
  options.keys.forEach((entry: JwtVerificationKey, i: number) => {
    const path = `keys[${i}]`;
    if (typeof entry !== 'object' || entry === null) throw new ConfigError('must be an object', { path });
    const alg = assertAlgorithm(entry.alg, `${path}.alg`);
    const kid = entry.kid === undefined ? undefined : nonEmptyString(entry.kid, `${path}.kid`);
    if (kid !== undefined && byKid.has(kid)) throw new ConfigError(`duplicate kid ${kid}`, { path: `${path}.kid` });
    const trusted = { kid, alg, key: importKey(entry.key, alg, 'verify', `${path}.key`) };
    keys.push(trusted);
    if (kid !== undefined) byKid.set(kid, trusted);
  });
  const keyAlgs = new Set(keys.map((k) => k.alg));
  const algorithms = new Set(
    options.algorithms === undefined
      ? keyAlgs
      : stringList(options.algorithms, 'algorithms').map((a, i) => assertAlgorithm(a, `algorithms[${i}]`)),
  );
  for (const alg of keyAlgs) {
    if (!algorithms.has(alg)) throw new ConfigError(`a key uses ${alg}, which is not listed`, { path: 'algorithms' });
  }
  for (const alg of algorithms) {
    if (!keyAlgs.has(alg)) throw new ConfigError(`${alg} is listed but no key uses it`, { path: 'algorithms' });
  }
  const issuer = stringList(options.issuer, 'issuer');
  const audience = stringList(options.audience, 'audience');
  const rolesPath =
    typeof options.rolesClaim === 'string' || options.rolesClaim === undefined
      ? [nonEmptyString(options.rolesClaim ?? JWT_DEFAULTS.rolesClaim, 'rolesClaim')]
      : stringList(options.rolesClaim, 'rolesClaim');
  const tenantClaim = nonEmptyString(options.tenantClaim ?? JWT_DEFAULTS.tenantClaim, 'tenantClaim');
  const toleranceSec = nonNegativeNumber(
    options.clockToleranceSec ?? JWT_DEFAULTS.clockToleranceSec,
    'clockToleranceSec',
  );
  const maxLifetimeMs =
    options.maxLifetimeMs === undefined ? undefined : positiveNumber(options.maxLifetimeMs, 'maxLifetimeMs');
  const requireKid = options.requireKid ?? false;
  if (typeof requireKid !== 'boolean') throw new ConfigError('must be a boolean', { path: 'requireKid' });
  const maxTokenLength = positiveInteger(options.maxTokenLength ?? JWT_DEFAULTS.maxTokenLength, 'maxTokenLength');
  const clock = options.clock ?? systemClock;

  /** Header checks that need no key: shape, algorithm, key references; then the candidate keys. */
  function candidatesFor(token: unknown): { alg: JwtAlgorithm; candidates: TrustedKey[] } {
    if (typeof token !== 'string' || token.length > maxTokenLength || !COMPACT_JWS.test(token)) {
      throw reject('malformed', 'not a compact JWS');
    }
    let header: Record<string, unknown>;
    try {
      header = decodeProtectedHeader(token) as Record<string, unknown>;
    } catch {
      throw reject('malformed', 'unreadable header');
    }
    const alg = header.alg;
    if (typeof alg !== 'string' || !algorithms.has(alg as JwtAlgorithm)) {
      throw reject('algorithm', 'algorithm not accepted');
    }
    if (KEY_REFERENCE_HEADERS.some((name) => Object.hasOwn(header, name))) {
      throw reject('untrusted-key-reference', 'the header carries or points at a key');
    }
    const kid = header.kid;
    if (kid === undefined) {
      if (requireKid) throw reject('missing-kid', 'no kid in the header');
      return { alg: alg as JwtAlgorithm, candidates: keys.filter((k) => k.alg === alg) };
    }
    if (typeof kid !== 'string') throw reject('malformed', 'kid is not a string');
    const key = byKid.get(kid);
    if (key === undefined) throw reject('unknown-kid', 'no configured key has this kid');
    if (key.alg !== alg) throw reject('algorithm', 'the kid is pinned to another algorithm');
    return { alg: key.alg, candidates: [key] };
  }

  async function verify(token: string): Promise<Identity> {
    const { alg, candidates } = candidatesFor(token);
    const nowMs = clock.now();
    let payload: JWTPayload | undefined;
    for (const candidate of candidates) {
      try {
        ({ payload } = await jwtVerify(token, candidate.key, {
          algorithms: [alg],
          issuer,
          audience,
          requiredClaims: ['exp'],
          clockTolerance: toleranceSec,
          currentDate: new Date(nowMs),
        }));
        break;
      } catch (err) {
        // Another key of the same algorithm may have signed it: only a signature mismatch moves on.
        if ((err as { code?: unknown })?.code === 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED') continue;
        throw fromJose(err);
      }
    }
    if (payload === undefined) throw reject('bad-signature', 'signature does not verify');
    checkLifetime(payload, nowMs);
    return toIdentity(payload);
  }

  function checkLifetime(payload: JWTPayload, nowMs: number): void {
    const nowSec = Math.floor(nowMs / 1000);
    const { iat, exp } = payload;
    if (iat !== undefined && iat > nowSec + toleranceSec) {
      throw reject('not-yet-valid', 'issued in the future', { claim: 'iat' });
    }
    if (maxLifetimeMs !== undefined && ((exp as number) - (iat ?? nowSec)) * 1000 > maxLifetimeMs) {
      throw reject('lifetime-too-long', 'lifetime exceeds maxLifetimeMs', { claim: 'exp' });
    }
  }

  function toIdentity(payload: JWTPayload): Identity {
    const { sub } = payload;
    if (typeof sub !== 'string' || sub === '')
      throw reject('invalid-claim', 'sub must be a non-empty string', { claim: 'sub' });
    let rolesValue: unknown = payload;
    for (const segment of rolesPath) {
      rolesValue =
        typeof rolesValue === 'object' && rolesValue !== null && Object.hasOwn(rolesValue, segment)
          ? (rolesValue as Record<string, unknown>)[segment]
          : undefined;
    }
    const rolesName = rolesPath.join('.');
    if (rolesValue !== undefined && (!Array.isArray(rolesValue) || rolesValue.some((r) => typeof r !== 'string'))) {
      throw reject('invalid-claim', `${rolesName} must be an array of strings`, { claim: rolesName });
    }
    const tenant = payload[tenantClaim];
    if (tenant !== undefined && (typeof tenant !== 'string' || tenant === '')) {
      throw reject('invalid-claim', `${tenantClaim} must be a non-empty string`, { claim: tenantClaim });
    }
    return {
      subject: sub,
      roles: rolesValue === undefined ? [] : [...(rolesValue as string[])],
      ...(tenant === undefined ? {} : { tenant }),
      claims: payload,
    };
  }

  return Object.freeze({ verify });
}

/**
 * Maps a jose failure to an UnauthorizedError by its stable `code`. The jose error is not kept as
 * `cause`: claim failures carry the whole claims set.
 */
function fromJose(err: unknown): UnauthorizedError {
  const { code, claim, reason } = (err ?? {}) as { code?: unknown; claim?: unknown; reason?: unknown };
  switch (code) {
    case 'ERR_JOSE_ALG_NOT_ALLOWED':
      return reject('algorithm', 'algorithm not accepted');
    case 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED':
      return reject('bad-signature', 'signature does not verify');
    case 'ERR_JWT_EXPIRED':
      return reject('expired', 'expired', { claim: typeof claim === 'string' ? claim : 'exp' });
    case 'ERR_JWT_CLAIM_VALIDATION_FAILED': {
      const name = typeof claim === 'string' ? claim : 'unknown';
      if (reason === 'invalid') return reject('invalid-claim', `${name} has the wrong type`, { claim: name });
      if (name === 'exp' && reason === 'missing') return reject('missing-exp', 'no exp claim', { claim: name });
      if (name === 'nbf') return reject('not-yet-valid', 'not valid yet', { claim: name });
      if (name === 'iss') return reject('issuer', 'issuer not accepted', { claim: name });
      if (name === 'aud') return reject('audience', 'audience not accepted', { claim: name });
      return reject('invalid-claim', `${name} failed validation`, { claim: name });
    }
    default: {
      // JWSInvalid, JWTInvalid, JOSENotSupported (an unknown `crit`). Anything that is not a jose
      // error is unforeseen: it is still a refusal, but keeps its cause for whoever debugs it.
      const refusal = reject('malformed', 'not a valid JWT');
      if (typeof code === 'string' && code.startsWith('ERR_J')) return refusal;
      return new UnauthorizedError(refusal.message, { data: refusal.data, cause: err });
    }
  }
}
