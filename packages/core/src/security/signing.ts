/**
 * Message signing: a publish hook signs every envelope with the keyring's active key, a consume
 * hook verifies it before anything else sees the message, and refuses replays.
 *
 * Where the signature travels: in four envelope headers (`headers`, the free string map), not
 * in new envelope attributes, so that signed envelopes stay plain `Envelope`s that every codec,
 * transport, the gateway and other languages carry unchanged:
 *
 * - `x-agentbus-sig-kid`   id of the key that signed
 * - `x-agentbus-sig-alg`   `hmac-sha256` or `ed25519`
 * - `x-agentbus-sig-time`  when it was signed (RFC 3339, ms, UTC)
 * - `x-agentbus-sig-value` the signature, base64url without padding
 *
 * The `x-agentbus-sig-` prefix is reserved: signing replaces every header with it.
 *
 * What is signed ({@link signingInput}): the UTF-8 bytes of `agentbus.sig.v1\n` followed by the
 * RFC 8785 canonical JSON ({@link canonicalize}) of the whole envelope except the
 * `x-agentbus-sig-value` header: `specversion`, `id`, `source`, `type`, `time`,
 * `datacontenttype`, `data`, `topic`, `correlationid`, `causationid`, `workflowid`, `sequence`,
 * `priority`, `expiresat`, `replyto`, `traceparent`, `schemaversion`, every other header, and
 * the kid, algorithm and time headers themselves (so none of them can be swapped). The prefix
 * keeps a key shared with some other protocol from signing something this one accepts.
 *
 * A signed message carries JSON data: the signer sends what it signed, so a value the canonical
 * form converts (a Date becomes its ISO string, a Buffer `{type, data}`) or leaves out (an
 * `undefined` member) is sent in that JSON form under every codec, and the verifier refuses
 * (`malformed`) a signed message whose data holds anything else. Otherwise two different values
 * could share one signature: with MessagePack, a signed ISO string re-encoded as a timestamp
 * arrives as a Date, and a signed null as an Invalid Date.
 *
 * Order with other middleware: the envelope must not change after it is signed. Sequencing
 * numbers envelopes (`sequence`) in its publish hook; signing must run after it, so add the
 * signer after `sequencing()` (publish hooks run in the order added). The verifier, though,
 * should run first on consume, before sequencing or dedup act on a forged message. One object
 * cannot be both last and first, so for that setup use the two halves:
 *
 * ```ts
 * bus.use(verifier(opts));   // consume: first
 * bus.use(sequencing(...));
 * bus.use(signer(opts));     // publish: last, after the sequence number is set
 * ```
 *
 * `signing(opts)` is both in one middleware, for buses without envelope-changing middleware.
 *
 * Replay protection does not trust the delivery's attempt count (the broker transports read it
 * from what travels with the message, which whoever may publish raw to the broker can set). The
 * verifier keeps, per consumer group, source and id, what it knows of a message in a replay store
 * (an {@link IdempotencyStore}: in-process by default, a Redis or SQLite one shared by every
 * consumer): a message never seen must be fresh — its signature time within `toleranceMs` ahead and
 * `maxAgeMs` behind — and is then recorded as being handled for `retryWindowMs` (24 h); a message
 * recorded as being handled is a redelivery (a retry, a consumer that died, an operator's replay
 * of its dead letter) and passes without the freshness check however old; a message whose handler
 * succeeded is recorded as done, and a copy of it is a replay, refused. So a captured message can
 * be played again only while its original has not been handled successfully (it then runs as a
 * retry would; put `dedup` behind the verifier where that matters), and never once done or once
 * stale. Size the in-process store for the message rate over `retryWindowMs`: a record evicted early
 * lets a copy through as new while it is still fresh.
 * The envelope's `topic` must be matched by the subscription's pattern, or by another pattern its
 * group was subscribed with through this middleware (`wrong-topic` otherwise): the signature
 * covers the topic, not the subject or routing key it arrived on. (A group bound to patterns
 * subscribed only in other processes: their messages are refused here.)
 * Limits: each process has its own replay store unless given a shared one (`replayStore`); a
 * message first seen when older than `maxAgeMs` is refused (raise it where a backlog waits that
 * long); a dead letter replayed after `retryWindowMs` counts as new, and so as stale.
 */
import { type Clock, systemClock } from '../clock.js';
import { type IdempotencyState, type IdempotencyStore, memoryIdempotencyStore } from '../dedup.js';
import { type Envelope, expiresAtMs } from '../envelope.js';
import { BusError, ConfigError, SignatureError } from '../errors.js';
import type { ConsumeContext, Middleware, Next, PublishContext } from '../middleware.js';
import { positiveNumber } from '../validate.js';
import { canonicalize, jsonValueProblem } from './canonical.js';
import { GroupPatterns } from './group-patterns.js';
import { type Keyring, SIGNATURE_ALGORITHMS, type SignatureAlgorithm } from './keyring.js';

/** The envelope headers that carry a signature. */
export const SIGNATURE_HEADERS = Object.freeze({
  kid: 'x-agentbus-sig-kid',
  algorithm: 'x-agentbus-sig-alg',
  time: 'x-agentbus-sig-time',
  value: 'x-agentbus-sig-value',
} as const);

/** Prefix of every signing input: the scheme and its version. */
export const SIGNING_CONTEXT = 'agentbus.sig.v1\n';

export const SIGNING_DEFAULTS = Object.freeze({
  /** How far a signature time may lie in the future (clock skew), and by default in the past. */
  toleranceMs: 5 * 60_000,
  allowUnsigned: false,
  /** Keys of the default in-process replay store. */
  replayStoreMaxKeys: 100_000,
  /** How long a verified message is accepted again as a redelivery, and a handled one refused as a replay. */
  retryWindowMs: 24 * 3_600_000,
});

/** Who signed a verified message; the verifier puts it in the consume context's `state` under `signature`. */
export interface SignatureInfo {
  readonly kid: string;
  readonly algorithm: SignatureAlgorithm;
  readonly signedAtMs: number;
}

/**
 * Why a message was refused, as `data.check` of its SignatureError: the key checks of
 * {@link Keyring.verificationKey} (`unknown-key`, `revoked-key`, `algorithm-mismatch`,
 * `key-not-yet-valid`, `key-expired`) or one of these. `wrong-topic`: validly signed for a topic
 * the subscription's pattern does not match (copied onto another topic at the broker);
 * `expired`: its signed `expiresat` has passed (the bus checks the transport's copy of the expiry,
 * which a raw publisher can leave out).
 */
export type SignatureCheck =
  | 'unsigned'
  | 'malformed'
  | 'from-future'
  | 'stale'
  | 'bad-signature'
  | 'replay'
  | 'wrong-topic'
  | 'expired'
  | 'wrong-source';

function refuse(check: SignatureCheck, message: string, extra: object = {}): never {
  throw new SignatureError(message, { data: { check, ...extra } });
}

/** The headers of `env` without the signature headers. */
function unsignedHeaders(env: Envelope): Record<string, string> {
  const out: Record<string, string> = {};
  const h = env.headers;
  if (h === undefined) return out;
  for (const name of Object.keys(h)) {
    if (!name.startsWith('x-agentbus-sig-')) out[name] = h[name] as string;
  }
  return out;
}

/**
 * The bytes a signature covers: {@link SIGNING_CONTEXT} + the canonical JSON of `envelope`
 * without its `x-agentbus-sig-value` header (see the module comment for the attribute list).
 * Throws ValidationError for an envelope that has no canonical form (see {@link canonicalize}).
 */
export function signingInput(envelope: Envelope): Buffer {
  let env: Envelope = envelope;
  if (envelope.headers !== undefined && SIGNATURE_HEADERS.value in envelope.headers) {
    const { [SIGNATURE_HEADERS.value]: _, ...rest } = envelope.headers;
    env = { ...envelope, headers: rest };
  }
  return Buffer.from(SIGNING_CONTEXT + canonicalize(env), 'utf8');
}

/**
 * A copy of `envelope` signed with the keyring's active key at `nowMs`: any earlier signature
 * headers are replaced. Throws SignatureError when the keyring has no usable signing key and
 * ValidationError when the envelope has no canonical JSON form (binary data, NaN …).
 */
export function signEnvelope<T>(envelope: Envelope<T>, keyring: Keyring, nowMs: number): Envelope<T> {
  const key = keyring.signingKey(nowMs);
  if (!key.signsFor(envelope.source)) {
    throw new SignatureError(`key ${key.kid} may not sign for source ${envelope.source}`, {
      data: { check: 'wrong-source', kid: key.kid, source: envelope.source },
    });
  }
  const headers = unsignedHeaders(envelope as Envelope);
  headers[SIGNATURE_HEADERS.kid] = key.kid;
  headers[SIGNATURE_HEADERS.algorithm] = key.algorithm;
  headers[SIGNATURE_HEADERS.time] = new Date(nowMs).toISOString();
  // What is sent is what is signed: data the canonical form would convert goes as its JSON form.
  const data = jsonData(envelope.data);
  const unsigned = { ...envelope, data, headers } as Envelope;
  const signature = key.sign(signingInput(unsigned)).toString('base64url');
  return Object.freeze({
    ...envelope,
    data,
    headers: Object.freeze({ ...headers, [SIGNATURE_HEADERS.value]: signature }),
  });
}

/** `data` as the JSON value it stands for (itself when it is one). ValidationError when it has no JSON form. */
function jsonData<T>(data: T): T {
  if (data === undefined || jsonValueProblem(data) === undefined) return data;
  // Wrapped, so that an error names the member as the envelope's ($.data.…).
  return (JSON.parse(canonicalize({ data })) as { data: T }).data;
}

const SIG_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
const BASE64URL = /^[A-Za-z0-9_-]+$/;
const SIGNATURE_BYTES: Readonly<Record<SignatureAlgorithm, number>> = { 'hmac-sha256': 32, ed25519: 64 };

export interface VerifyOptions {
  readonly keyring: Keyring;
  readonly nowMs: number;
  /** See {@link SigningOptions.toleranceMs}. */
  readonly toleranceMs?: number;
  /** See {@link SigningOptions.maxAgeMs}. */
  readonly maxAgeMs?: number;
  /** Skip the freshness check (a redelivery). Default false. */
  readonly skipFreshness?: boolean;
}

/**
 * Checks the signature of `envelope` (no replay check: that needs a cache, see {@link verifier}).
 * Returns who signed it, or throws SignatureError with `data.check` saying why not
 * ({@link SignatureCheck}, or a key check of {@link Keyring.verificationKey}).
 */
export function verifyEnvelope(envelope: Envelope, options: VerifyOptions): SignatureInfo {
  const { keyring, nowMs } = options;
  const toleranceMs = options.toleranceMs ?? SIGNING_DEFAULTS.toleranceMs;
  const maxAgeMs = options.maxAgeMs ?? toleranceMs;
  const h = envelope.headers ?? {};
  const kid = h[SIGNATURE_HEADERS.kid];
  const algorithm = h[SIGNATURE_HEADERS.algorithm];
  const time = h[SIGNATURE_HEADERS.time];
  const value = h[SIGNATURE_HEADERS.value];
  const ids = { messageId: envelope.id, source: envelope.source };
  if (kid === undefined || algorithm === undefined || time === undefined || value === undefined) {
    if (kid === undefined && algorithm === undefined && time === undefined && value === undefined) {
      refuse('unsigned', `message ${envelope.id} from ${envelope.source} is not signed`, ids);
    }
    refuse('malformed', `message ${envelope.id} has an incomplete signature (x-agentbus-sig-* headers)`, ids);
  }
  if (!SIGNATURE_ALGORITHMS.includes(algorithm as SignatureAlgorithm)) {
    refuse('malformed', `message ${envelope.id} claims an unsupported signature algorithm`, ids);
  }
  const signedAtMs = SIG_TIME.test(time) ? Date.parse(time) : Number.NaN;
  if (!Number.isFinite(signedAtMs)) refuse('malformed', `message ${envelope.id} has an unreadable signature time`, ids);
  const at = { ...ids, kid, signedAt: time };
  if (!options.skipFreshness) {
    if (signedAtMs > nowMs + toleranceMs) {
      refuse('from-future', `message ${envelope.id} was signed ${signedAtMs - nowMs} ms in the future`, at);
    }
    if (nowMs - signedAtMs > maxAgeMs) {
      refuse('stale', `message ${envelope.id} was signed ${nowMs - signedAtMs} ms ago (max ${maxAgeMs} ms)`, at);
    }
  }
  let key: ReturnType<Keyring['verificationKey']>;
  try {
    key = keyring.verificationKey(kid, algorithm, signedAtMs, nowMs);
  } catch (err) {
    if (err instanceof SignatureError) {
      throw new SignatureError(`message ${envelope.id}: ${err.message}`, {
        data: { ...(err.data as object), ...at },
      });
    }
    throw err;
  }
  if (!key.signsFor(envelope.source)) {
    refuse('wrong-source', `message ${envelope.id}: key ${kid} may not sign for source ${envelope.source}`, at);
  }
  const signature = BASE64URL.test(value) ? Buffer.from(value, 'base64url') : undefined;
  // Only the one canonical encoding: the unused low bits of the last character must be zero,
  // so that no second header value carries the same signature.
  if (
    signature === undefined ||
    signature.length !== SIGNATURE_BYTES[key.algorithm] ||
    signature.toString('base64url') !== value
  ) {
    refuse('bad-signature', `message ${envelope.id} has a malformed ${key.algorithm} signature`, at);
  }
  const problem = envelope.data === undefined ? undefined : jsonValueProblem(envelope.data, '$.data');
  if (problem !== undefined) {
    refuse(
      'malformed',
      `message ${envelope.id} carries data that is not JSON (${problem}): a signed message carries JSON only`,
      at,
    );
  }
  let input: Buffer;
  try {
    input = signingInput(envelope);
  } catch (cause) {
    throw new SignatureError(`message ${envelope.id} has no canonical form: ${(cause as Error).message}`, {
      cause,
      data: { check: 'malformed', ...at },
    });
  }
  if (!key.verify(input, signature)) {
    refuse('bad-signature', `message ${envelope.id}: signature does not match (kid ${kid})`, at);
  }
  return { kid, algorithm: key.algorithm, signedAtMs };
}

export interface SigningOptions {
  readonly keyring: Keyring;
  /** Time source for signing and for the freshness check (default: the system clock). */
  readonly clock?: Clock;
  /**
   * How far a signature time may lie ahead of the verifier's clock (default 5 min), and, unless
   * `maxAgeMs` says otherwise, how far behind it.
   */
  readonly toleranceMs?: number;
  /** How old a signature may be on first delivery (default: `toleranceMs`). */
  readonly maxAgeMs?: number;
  /**
   * Where the verifier records the messages it verified and handled (default: an in-process
   * {@link memoryIdempotencyStore} of 100,000 keys). Give it a store of its own, not dedup's.
   */
  readonly replayStore?: IdempotencyStore;
  /**
   * How long a verified message may come back (retries, redeliveries, a replay of its dead
   * letter) without a fresh signature, and how long a handled one is refused as a replay
   * (default 24 h, at least `maxAgeMs` + `toleranceMs`).
   */
  readonly retryWindowMs?: number;
  /** Let messages without any signature headers through to the handler (default false). */
  readonly allowUnsigned?: boolean;
}

interface Settings {
  readonly keyring: Keyring;
  readonly clock: Clock;
  readonly toleranceMs: number;
  readonly maxAgeMs: number;
  readonly replayStore: IdempotencyStore;
  readonly retryWindowMs: number;
  readonly allowUnsigned: boolean;
}

function settingsOf(options: SigningOptions): Settings {
  if (typeof options?.keyring?.signingKey !== 'function') {
    throw new ConfigError('a Keyring is required', { path: 'keyring' });
  }
  const clock = options.clock ?? systemClock;
  const toleranceMs = positiveNumber(options.toleranceMs ?? SIGNING_DEFAULTS.toleranceMs, 'toleranceMs');
  const maxAgeMs = positiveNumber(options.maxAgeMs ?? toleranceMs, 'maxAgeMs');
  const replayStore =
    options.replayStore ?? memoryIdempotencyStore({ maxKeys: SIGNING_DEFAULTS.replayStoreMaxKeys, clock });
  if (typeof replayStore.begin !== 'function' || typeof replayStore.complete !== 'function') {
    throw new ConfigError('must be an IdempotencyStore (begin, complete, release)', { path: 'replayStore' });
  }
  const retryWindowMs = Math.max(
    positiveNumber(options.retryWindowMs ?? SIGNING_DEFAULTS.retryWindowMs, 'retryWindowMs'),
    maxAgeMs + toleranceMs,
  );
  const allowUnsigned = options.allowUnsigned ?? SIGNING_DEFAULTS.allowUnsigned;
  if (typeof allowUnsigned !== 'boolean') throw new ConfigError('must be a boolean', { path: 'allowUnsigned' });
  return { keyring: options.keyring, clock, toleranceMs, maxAgeMs, replayStore, retryWindowMs, allowUnsigned };
}

function publishHook(s: Settings) {
  return (ctx: PublishContext, next: Next): Promise<void> => {
    try {
      ctx.envelope = signEnvelope(ctx.envelope, s.keyring, s.clock.now());
    } catch (err) {
      return Promise.reject(err);
    }
    return next();
  };
}

function consumeHook(s: Settings, groups: GroupPatterns) {
  return (ctx: ConsumeContext, next: Next): Promise<void> => {
    const env = ctx.envelope;
    let info: SignatureInfo;
    try {
      const h = env.headers;
      if (s.allowUnsigned && (h === undefined || !Object.keys(h).some((n) => n.startsWith('x-agentbus-sig-')))) {
        return next();
      }
      info = verifyEnvelope(env, {
        keyring: s.keyring,
        nowMs: s.clock.now(),
        toleranceMs: s.toleranceMs,
        maxAgeMs: s.maxAgeMs,
        // Checked below, once the replay store says whether the message was seen before.
        skipFreshness: true,
      });
    } catch (err) {
      return Promise.reject(asSignatureError(err, env));
    }
    // The signature covers the envelope's topic, not the subject or routing key it arrived on:
    // a signed message copied onto another topic at the broker must not reach that topic's handlers.
    if (!groups.delivers(ctx.group, ctx.pattern, env.topic)) {
      return Promise.reject(
        new SignatureError(`message ${env.id} was signed for topic ${env.topic}, not one of ${ctx.pattern}`, {
          data: { check: 'wrong-topic', messageId: env.id, source: env.source, kid: info.kid, topic: env.topic },
        }),
      );
    }
    // The bus dead-letters expired messages by the transport's expiry, which is not signed.
    const exp = expiresAtMs(env);
    if (exp !== undefined && exp <= s.clock.now()) {
      return Promise.reject(
        new SignatureError(`message ${env.id} expired at ${env.expiresat}`, {
          data: { check: 'expired', messageId: env.id, source: env.source, kid: info.kid },
        }),
      );
    }
    ctx.state.set('signature', info);
    // Length-prefixed, so that no source or id (NULs and all) can make another message's key.
    const key = `${ctx.group.length}:${ctx.group}${env.source.length}:${env.source}${env.id}`;
    let seen: Promise<IdempotencyState>;
    try {
      seen = s.replayStore.begin(key, s.retryWindowMs);
    } catch (err) {
      return Promise.reject(err); // the store failed (an outage): retryable unless it says otherwise
    }
    return seen.then(async (state) => {
      if (state === 'done') throw replayError(env, info);
      if (state === 'new') {
        // Never seen: it must be fresh. (Refused, it is forgotten: one from the future may be fine later.)
        const stale = freshnessError(env, info, s);
        if (stale) {
          await s.replayStore.release(key).catch(() => {});
          throw stale;
        }
      }
      // 'busy': seen, not handled yet — a redelivery, however old.
      await next();
      // Handled: a copy from now on is a replay. (Failed or put back: it may come back as a retry.)
      if (!ctx.delivery.settled || ctx.delivery.settledAs === 'ack') await s.replayStore.complete(key, s.retryWindowMs);
    });
  };
}

/** Why a message seen for the first time is refused for its signature time, if it is. */
function freshnessError(env: Envelope, info: SignatureInfo, s: Settings): SignatureError | undefined {
  const now = s.clock.now();
  const at = {
    messageId: env.id,
    source: env.source,
    kid: info.kid,
    signedAt: new Date(info.signedAtMs).toISOString(),
  };
  if (info.signedAtMs > now + s.toleranceMs) {
    return new SignatureError(`message ${env.id} was signed ${info.signedAtMs - now} ms in the future`, {
      data: { check: 'from-future', ...at },
    });
  }
  if (now - info.signedAtMs > s.maxAgeMs) {
    return new SignatureError(`message ${env.id} was signed ${now - info.signedAtMs} ms ago (max ${s.maxAgeMs} ms)`, {
      data: { check: 'stale', ...at },
    });
  }
  return undefined;
}

function replayError(env: Envelope, info: SignatureInfo): SignatureError {
  return new SignatureError(`message ${env.id} from ${env.source} was seen before (replay)`, {
    data: { check: 'replay', messageId: env.id, source: env.source, kid: info.kid },
  });
}

/** Anything that went wrong while verifying becomes a SignatureError, so the bus dead-letters with reason `signature`. */
function asSignatureError(err: unknown, env: Envelope): SignatureError {
  if (err instanceof SignatureError) return err;
  const what = err instanceof BusError ? `${err.code}: ${err.message}` : String((err as Error)?.message ?? err);
  return new SignatureError(`message ${env.id} could not be verified: ${what}`, {
    cause: err,
    data: { check: 'malformed', messageId: env.id, source: env.source },
  });
}

/**
 * Signs outbound and verifies inbound messages (see the module comment for what is covered and
 * where it travels). Publish: signs with the keyring's active key; a publish fails with
 * SignatureError if there is none usable. Consume: verifies before the rest of the chain; any
 * failure — unsigned (unless `allowUnsigned`), tampered, unknown/revoked/expired key, a claimed
 * algorithm that is not the key's, a time out of tolerance, a replay, a topic the subscription's
 * pattern does not match, a signed expiry that has passed — throws SignatureError, which is not
 * retryable: the bus dead-letters the message with reason `signature` and the
 * handler never runs. The verified {@link SignatureInfo} is in `ctx.state.get('signature')`.
 *
 * Add it after middleware that changes envelopes on publish (sequencing), or use
 * {@link signer} and {@link verifier} to place the two halves apart.
 */
export function signing(options: SigningOptions): Middleware {
  const s = settingsOf(options);
  const groups = new GroupPatterns();
  return { name: 'signing', publish: publishHook(s), consume: consumeHook(s, groups), subscribe: groups.subscribed };
}

/** The publish half of {@link signing}: add it last, after middleware that changes envelopes. */
export function signer(options: Pick<SigningOptions, 'keyring' | 'clock'>): Middleware {
  const s = settingsOf(options);
  return { name: 'signer', publish: publishHook(s) };
}

/** The consume half of {@link signing}: add it first, so nothing acts on an unverified message. */
export function verifier(options: SigningOptions): Middleware {
  const s = settingsOf(options);
  const groups = new GroupPatterns();
  return { name: 'verifier', consume: consumeHook(s, groups), subscribe: groups.subscribed };
}
