import { createHmac, generateKeyPairSync, type KeyObject, randomUUID } from 'node:crypto';
import {
  type AuthorizationMiddleware,
  authorization,
  type Bus,
  type BusError,
  createBus,
  createJwtIssuer,
  createJwtVerifier,
  createPolicy,
  createSchemaRegistry,
  type DeadLetter,
  type Envelope,
  ForbiddenError,
  type JwtVerifier,
  jsonCodec,
  Keyring,
  ManualClock,
  type Middleware,
  PayloadTooLargeError,
  SignatureError,
  type SigningKeySpec,
  schemaValidation,
  signEnvelope,
  signer,
  silentLogger,
  type Transport,
  type TransportMessage,
  UnauthorizedError,
  ValidationError,
  verification,
  verificationPipeline,
  verifier,
} from '@agentbus/core';
import { afterEach, describe, expect, it } from 'vitest';
import { until } from './wait.js';

export interface SecurityAttackConformanceOptions {
  /** Shown in the describe block. */
  readonly name: string;
  /**
   * A new client of the backend under test. A transport whose capabilities say `crossProcess`
   * gets one client per party (consumer, sender, attacker), as separate processes would; any
   * other is opened once per test and shared.
   */
  readonly open: () => Transport | Promise<Transport>;
  /**
   * Whether one consumer with concurrency 1 sees messages in the order they were published
   * (default true): the legitimate messages are then checked in that order, otherwise as a set.
   */
  readonly ordered?: boolean;
  /** How long to wait for deliveries and dead letters (default 10 s). */
  readonly timeoutMs?: number;
  /** If set, the block is skipped with this reason (a server unreachable outside CI). */
  readonly skipReason?: string | undefined;
}

const ISSUER = 'https://login.agentbus.test';
const AUDIENCE = 'agentbus-gateway';
const LOGIN_KID = 'login-1';
const ORDER_TYPE = 'order.created';
const START = Date.UTC(2026, 5, 1, 9);
/** The verifier's limits: a signature from up to 30 s ahead, at most 60 s old. */
const TOLERANCE_MS = 30_000;
const MAX_AGE_MS = 60_000;
const ORDER_SCHEMA = {
  type: 'object',
  properties: {
    n: { type: 'integer', minimum: 0 },
    note: { type: 'string' },
    blob: { type: 'string' },
    nested: { type: 'object' },
  },
  required: ['n', 'note'],
  additionalProperties: false,
} as const;
const RULES = {
  rules: [{ maxBytes: 4096 }, { maxDepth: 8 }, { maxKeys: { total: 400, perObject: 40, arrayLength: 100 } }],
};

interface Order {
  readonly n: number;
  readonly note: string;
  readonly blob?: string;
  readonly nested?: unknown;
}

type ErrorClass = new (message: string) => BusError;

/** A dead letter the consumer must write: its message, reason, and the typed error behind it. */
interface ExpectedDeadLetter {
  readonly id: string;
  readonly reason: string;
  readonly error: ErrorClass;
  readonly data: Readonly<Record<string, unknown>>;
}

/** An agent that logged in: its bus and the authorization middleware holding its principal. */
interface Agent {
  readonly bus: Bus;
  readonly authz: AuthorizationMiddleware;
}

let loginKeys:
  | { readonly privateKey: KeyObject; readonly publicKey: KeyObject; readonly publicPem: string }
  | undefined;
/** The login service's RS256 key pair (made once: RSA key generation is slow). */
function loginKeyPair() {
  loginKeys ??= (() => {
    const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    return { privateKey, publicKey, publicPem: publicKey.export({ type: 'spki', format: 'pem' }) as string };
  })();
  return loginKeys;
}

function ed25519Key(kid: string): { readonly signing: SigningKeySpec; readonly verifying: SigningKeySpec } {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return { signing: { kid, algorithm: 'ed25519', privateKey }, verifying: { kid, algorithm: 'ed25519', publicKey } };
}

function nested(depth: number): Record<string, unknown> {
  let v: Record<string, unknown> = { leaf: true };
  for (let i = 1; i < depth; i++) v = { v };
  return v;
}

const b64 = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString('base64url');
const codec = jsonCodec();

/** `msg` with its encoded envelope decoded, changed by `edit` and encoded again. */
function editEnvelope(msg: TransportMessage, edit: (env: Envelope) => Envelope): TransportMessage {
  return { ...msg, body: codec.encode(edit(codec.decode(msg.body))) };
}

/** `msg` with the first occurrence of `from` in its bytes replaced by `to`. */
function editBytes(msg: TransportMessage, from: string, to: string): TransportMessage {
  const text = Buffer.from(msg.body).toString('utf8');
  if (!text.includes(from)) throw new Error(`${from} is not in the message bytes`);
  return { ...msg, body: Buffer.from(text.replace(from, to), 'utf8') };
}

async function rejectionOf(run: () => Promise<unknown>): Promise<unknown> {
  return run().then(
    () => undefined,
    (err: unknown) => err,
  );
}

function expectTyped(err: unknown, cls: ErrorClass, data: Readonly<Record<string, unknown>>): void {
  expect(err).toBeInstanceOf(cls);
  const e = err as BusError;
  expect(e.code).toBe(new cls('').code);
  expect(e.retryable).toBe(false);
  expect(e.data).toMatchObject(data);
}

/**
 * One deployment on the transport under test: a login service (RS256 JWTs), a policy, a schema
 * registry and a verification pipeline; an order service (the sender) and a billing agent (the
 * consumer) that logged in with tokens; and an attacker with its own client of the broker.
 */
class AttackWorld {
  readonly prefix = `sec${randomUUID().replaceAll('-', '').slice(0, 12)}`;
  readonly topic = `${this.prefix}.orders.created`;
  readonly group = `${this.prefix}-billing`;
  /** The security clock: signing, signature freshness, replay windows, JWT lifetimes. */
  readonly clock = new ManualClock(START);
  readonly k0 = ed25519Key('k0');
  readonly k1 = ed25519Key('k1');
  /** The order service's signing key. */
  readonly senderRing = new Keyring({ keys: [this.k1.signing], active: 'k1', clock: this.clock });
  /** k0, revoked after it leaked: what the attacker holds. */
  readonly leakedRing = new Keyring({ keys: [this.k0.signing], active: 'k0', clock: this.clock });
  readonly consumerRing = new Keyring({
    keys: [this.k0.verifying, this.k1.verifying],
    revoked: ['k0'],
    clock: this.clock,
  });
  readonly policy = createPolicy({
    roles: {
      'order-writer': {
        rules: [
          { actions: 'publish', patterns: `${this.prefix}.orders.>` },
          { effect: 'deny', actions: 'publish', patterns: `${this.prefix}.orders.refunds.>` },
        ],
      },
      'order-reader': {
        rules: [
          { actions: 'subscribe', patterns: [`${this.prefix}.orders.>`, `${this.prefix}.audit.>`] },
          { effect: 'deny', actions: 'subscribe', patterns: `${this.prefix}.audit.secrets.>` },
        ],
      },
    },
  });
  readonly registry = createSchemaRegistry({ logger: silentLogger });
  readonly pipeline = verificationPipeline({ config: RULES });
  readonly jwt: JwtVerifier = createJwtVerifier({
    keys: [{ kid: LOGIN_KID, key: loginKeyPair().publicKey, alg: 'RS256' }],
    algorithms: 'RS256',
    issuer: ISSUER,
    audience: AUDIENCE,
    clockToleranceSec: 0,
    clock: this.clock,
  });

  /** What the consumer's handler saw. */
  readonly handled: Envelope[] = [];
  /** Errors that refused a delivery at the consumer, by message id. */
  readonly refused = new Map<string, unknown[]>();
  /** Notes of the legitimate messages published, in order. */
  readonly legit: string[] = [];
  readonly dead: ExpectedDeadLetter[] = [];
  /** Patterns the consumer's bus subscribed to on its transport. */
  readonly transportSubscriptions: string[] = [];
  /** The order service's link to the broker, which the attacker sits on. */
  readonly wire = {
    /** Publishes that reached the link. */
    calls: 0,
    /** `swallow`: the next publish goes to the attacker only; `copy`: to the broker and the attacker. */
    mode: undefined as 'swallow' | 'copy' | undefined,
    captured: [] as TransportMessage[],
  };
  /** Agents that logged in. */
  agents = 0;

  readonly #o: SecurityAttackConformanceOptions;
  readonly #transports: Transport[] = [];
  readonly #buses: Bus[] = [];
  #shared: Transport | undefined;
  #n = 0;
  sender!: Agent;
  consumer!: Agent;
  /** The attacker's own client of the broker. */
  attacker!: Transport;

  constructor(o: SecurityAttackConformanceOptions) {
    this.#o = o;
    this.registry.register({ type: ORDER_TYPE, version: 1, schema: ORDER_SCHEMA });
  }

  static async start(o: SecurityAttackConformanceOptions): Promise<AttackWorld> {
    const w = new AttackWorld(o);
    try {
      w.sender = await w.login(await w.token('order-service', ['order-writer']), 'sender');
      w.consumer = await w.login(await w.token('billing-agent', ['order-reader']), 'consumer');
      w.attacker = await w.client();
      await w.consumer.bus.subscribe(`${w.prefix}.orders.>`, (d) => void w.handled.push(d.envelope), {
        group: w.group,
        concurrency: 1,
      });
    } catch (err) {
      await w.close();
      throw err;
    }
    return w;
  }

  get timeoutMs(): number {
    return this.#o.timeoutMs ?? 10_000;
  }

  /** A client of the broker: the test's one for an in-process transport, a new one otherwise. */
  async client(): Promise<Transport> {
    if (this.#shared) return this.#shared;
    const t = await this.#o.open();
    this.#transports.push(t);
    await t.connect();
    if (!t.capabilities.crossProcess) this.#shared = t;
    return t;
  }

  bus(transport: Transport, source: string, middleware: readonly Middleware[]): Bus {
    const b = createBus({ transport, ownsTransport: false, logger: silentLogger, source, middleware });
    this.#buses.push(b);
    return b;
  }

  /** A token from the login service (RS256), or with `audience`/`issuedAtMs` changed. */
  token(
    subject: string,
    roles: readonly string[],
    o: { readonly audience?: string; readonly issuedAtMs?: number; readonly ttlMs?: number } = {},
  ): Promise<string> {
    const issuer = createJwtIssuer({
      key: loginKeyPair().privateKey,
      alg: 'RS256',
      kid: LOGIN_KID,
      issuer: ISSUER,
      audience: o.audience ?? AUDIENCE,
      clock: o.issuedAtMs === undefined ? this.clock : new ManualClock(o.issuedAtMs),
    });
    return issuer.issue({ subject, roles, tenant: 'acme' }, o.ttlMs === undefined ? {} : { ttlMs: o.ttlMs });
  }

  /** Claims an attacker would like to have: the order service with every role. */
  forgedClaims(): Record<string, unknown> {
    const now = Math.floor(this.clock.now() / 1000);
    const roles = ['order-writer', 'order-reader', 'admin'];
    return { iss: ISSUER, aud: AUDIENCE, sub: 'order-service', roles, tenant: 'acme', iat: now, exp: now + 300 };
  }

  /**
   * The gateway's login: the token's verified identity becomes the principal of the agent's bus.
   * A token the verifier refuses rejects with its UnauthorizedError, before any bus exists.
   */
  async login(token: string, as: 'sender' | 'consumer'): Promise<Agent> {
    const identity = await this.jwt.verify(token);
    const authz = authorization({ policy: this.policy, principal: identity });
    const schema = schemaValidation({ registry: this.registry, requireSchema: true });
    const checks = verification(this.pipeline);
    this.agents++;
    if (as === 'sender') {
      const transport = this.#tapped(await this.client());
      const stack = [schema, checks, authz, signer({ keyring: this.senderRing, clock: this.clock })];
      return { bus: this.bus(transport, identity.subject, stack), authz };
    }
    const transport = this.#counted(await this.client());
    const check = verifier({
      keyring: this.consumerRing,
      clock: this.clock,
      toleranceMs: TOLERANCE_MS,
      maxAgeMs: MAX_AGE_MS,
    });
    return { bus: this.bus(transport, identity.subject, [this.#audit(), check, authz, checks, schema]), authz };
  }

  /**
   * Records the error each refused delivery failed with, by message id, and passes it on. It only
   * observes (an audit log would sit here): the verifier is the first hook that acts on a message.
   */
  #audit(): Middleware {
    return {
      name: 'audit',
      consume: async (ctx, next) => {
        try {
          await next();
        } catch (err) {
          const id = ctx.envelope.id;
          this.refused.set(id, [...(this.refused.get(id) ?? []), err]);
          throw err;
        }
      },
    };
  }

  /** `inner` with the attacker on the line: it may divert or copy what goes through. */
  #tapped(inner: Transport): Transport {
    const wire = this.wire;
    return this.#wrap(inner, {
      publish: async (batch) => {
        wire.calls++;
        const mode = wire.mode;
        if (mode !== undefined) wire.captured.push(...batch);
        if (mode !== 'swallow') await inner.publish(batch);
      },
    });
  }

  /** `inner`, counting the subscriptions made on it. */
  #counted(inner: Transport): Transport {
    return this.#wrap(inner, {
      subscribe: (pattern, options) => {
        this.transportSubscriptions.push(pattern);
        return inner.subscribe(pattern, options);
      },
    });
  }

  #wrap(inner: Transport, over: Partial<Pick<Transport, 'publish' | 'subscribe'>>): Transport {
    return {
      name: inner.name,
      capabilities: inner.capabilities,
      deadLetters: inner.deadLetters,
      connect: () => inner.connect(),
      publish: over.publish ?? ((batch) => inner.publish(batch)),
      subscribe: over.subscribe ?? ((pattern, options) => inner.subscribe(pattern, options)),
      health: (deep) => inner.health(deep),
      ...(inner.routeCount ? { routeCount: (topic: string) => inner.routeCount?.(topic) ?? Promise.resolve(0) } : {}),
      close: async () => {},
    };
  }

  /** An order the order service publishes as it should, expected at the consumer. */
  async legitimate(): Promise<void> {
    const n = ++this.#n;
    const note = `legit-${n}`;
    await this.publish(this.sender.bus, { n, note });
    this.legit.push(note);
  }

  publish(bus: Bus, data: Order, o: { readonly topic?: string; readonly type?: string } = {}): Promise<Envelope> {
    return bus.publish(o.topic ?? this.topic, data, {
      type: o.type ?? ORDER_TYPE,
      headers: { 'x-tenant': 'acme' },
    });
  }

  /**
   * Has the order service publish `data` (through its whole stack) while the attacker sits on its
   * link: `swallow` keeps it from the broker, `copy` lets it through (expected at the consumer).
   * Returns what the attacker captured: the signed bytes as they were to go on the wire.
   */
  async intercept(mode: 'swallow' | 'copy', note: string): Promise<TransportMessage> {
    const n = ++this.#n;
    this.wire.mode = mode;
    try {
      await this.publish(this.sender.bus, { n, note });
    } finally {
      this.wire.mode = undefined;
    }
    if (mode === 'copy') this.legit.push(note);
    const captured = this.wire.captured.at(-1);
    if (captured === undefined) throw new Error('the attacker captured nothing');
    return captured;
  }

  /** Puts `msg` on the broker through the attacker's client, bypassing every middleware. */
  inject(msg: TransportMessage): Promise<void> {
    return this.attacker.publish([msg]);
  }

  /** A bus of the attacker's: its own client, only the middleware it chooses. */
  rogue(source: string, middleware: readonly Middleware[] = []): Bus {
    return this.bus(this.attacker, source, middleware);
  }

  /** A process holding the order service's key whose bus signs but skips every other check. */
  insider(): Bus {
    return this.rogue('order-service', [signer({ keyring: this.senderRing, clock: this.clock })]);
  }

  expectDead(id: string, reason: string, error: ErrorClass, data: Readonly<Record<string, unknown>>): void {
    this.dead.push({ id, reason, error, data });
  }

  /** `publish` rejects with `cls` carrying `data`, and nothing reached the broker. */
  async refusedAtPublish(
    publish: () => Promise<unknown>,
    cls: ErrorClass,
    data: Readonly<Record<string, unknown>>,
  ): Promise<void> {
    const calls = this.wire.calls;
    expectTyped(await rejectionOf(publish), cls, data);
    expect(this.wire.calls).toBe(calls);
  }

  /** The login refuses `token` with UnauthorizedError (`data.reason`): no agent, no bus. */
  async refusedLogin(token: string, reason: string): Promise<void> {
    const agents = this.agents;
    const err = await rejectionOf(() => this.login(token, 'sender'));
    expect(err).toBeInstanceOf(UnauthorizedError);
    expect((err as UnauthorizedError).code).toBe('UNAUTHORIZED');
    expect((err as UnauthorizedError).data).toMatchObject({ reason });
    expect(this.agents).toBe(agents);
  }

  deadLetters(): Promise<DeadLetter[]> {
    return this.consumer.bus.transport.deadLetters.list({ group: this.group });
  }

  /** Waits until every legitimate message was handled and every expected dead letter written. */
  async drain(): Promise<void> {
    await until(
      async () => this.handled.length >= this.legit.length && (await this.deadLetters()).length >= this.dead.length,
      this.timeoutMs,
      `${this.legit.length} legitimate messages handled (${this.handled.length}) and ${this.dead.length} dead letters`,
    );
  }

  /**
   * Every legitimate message handled exactly once (in publication order where the transport keeps
   * it), nothing else handled, and exactly the expected dead letters: reason, one attempt, the
   * error's code, and the typed error the consumer refused the delivery with.
   */
  async check(): Promise<void> {
    await this.drain();
    const notes = this.handled.map((e) => (e.data as Order).note);
    // Only legitimate orders reached the handler (a replayed one only as the original it copies).
    if (this.#o.ordered ?? true) expect(notes).toEqual(this.legit);
    else expect([...notes].sort()).toEqual([...this.legit].sort());
    const ids = this.handled.map((e) => e.id);
    expect(new Set(ids).size).toBe(ids.length);
    expect(this.handled.every((e) => e.source === 'order-service' && e.type === ORDER_TYPE)).toBe(true);
    const dead = await this.deadLetters();
    expect(dead.map((d) => `${d.message.id} ${d.reason}`).sort()).toEqual(
      this.dead.map((d) => `${d.id} ${d.reason}`).sort(),
    );
    for (const want of this.dead) {
      const dl = dead.find((d) => d.message.id === want.id) as DeadLetter;
      const code = new want.error('').code;
      expect(dl.attempts).toBe(1);
      expect(dl.error?.startsWith(`${code}: `)).toBe(true);
      expect(dl.message.topic.startsWith(`${this.prefix}.`)).toBe(true);
      const errors = this.refused.get(want.id) ?? [];
      expect(errors).toHaveLength(1);
      expectTyped(errors[0], want.error, want.data);
    }
  }

  async close(): Promise<void> {
    await Promise.all(this.#buses.splice(0).map((b) => b.close()));
    await Promise.all(this.#transports.splice(0).map((t) => t.close()));
  }
}

interface AttackCase {
  readonly name: string;
  /** Carries out the attack and records what the world must then show; legitimate messages surround it. */
  run(w: AttackWorld): Promise<void>;
}

const sig = (check: string) => ({ check });

const CASES: readonly AttackCase[] = [
  {
    name: 'a tampered payload (bytes changed on the wire) is dead-lettered: signature, bad-signature',
    async run(w) {
      const msg = await w.intercept('swallow', 'amount=10');
      await w.inject(editBytes(msg, 'amount=10', 'amount=99'));
      w.expectDead(msg.id, 'signature', SignatureError, sig('bad-signature'));
    },
  },
  {
    name: 'a tampered or added header is dead-lettered: signature, bad-signature',
    async run(w) {
      const a = await w.intercept('swallow', 'tenant');
      await w.inject(editEnvelope(a, (env) => ({ ...env, headers: { ...env.headers, 'x-tenant': 'evil-corp' } })));
      w.expectDead(a.id, 'signature', SignatureError, sig('bad-signature'));
      await w.legitimate();
      const b = await w.intercept('swallow', 'role');
      await w.inject(editEnvelope(b, (env) => ({ ...env, headers: { ...env.headers, 'x-role': 'admin' } })));
      w.expectDead(b.id, 'signature', SignatureError, sig('bad-signature'));
    },
  },
  {
    name: 'a message re-signed with a revoked key is dead-lettered: signature, revoked-key',
    async run(w) {
      const msg = await w.intercept('swallow', 'amount=10');
      const forged = editEnvelope(msg, (env) =>
        signEnvelope({ ...env, data: { ...(env.data as Order), note: 'amount=10000' } }, w.leakedRing, w.clock.now()),
      );
      await w.inject(forged);
      w.expectDead(msg.id, 'signature', SignatureError, { check: 'revoked-key', kid: 'k0' });
    },
  },
  {
    name: 'an unknown key id, or the known kid with a key of its own, is dead-lettered: signature',
    async run(w) {
      const mallory = ed25519Key('mallory');
      const ring = new Keyring({ keys: [mallory.signing], active: 'mallory', clock: w.clock });
      const unknown = await w.publish(w.rogue('order-service', [signer({ keyring: ring, clock: w.clock })]), {
        n: 0,
        note: 'unknown-kid',
      });
      w.expectDead(unknown.id, 'signature', SignatureError, { check: 'unknown-key', kid: 'mallory' });
      await w.legitimate();
      const spoof = ed25519Key('k1');
      const spoofRing = new Keyring({ keys: [spoof.signing], active: 'k1', clock: w.clock });
      const spoofed = await w.publish(w.rogue('order-service', [signer({ keyring: spoofRing, clock: w.clock })]), {
        n: 0,
        note: 'spoofed-kid',
      });
      w.expectDead(spoofed.id, 'signature', SignatureError, { check: 'bad-signature', kid: 'k1' });
    },
  },
  {
    name: 'a message held back past maxAgeMs (stale timestamp) is dead-lettered: signature, stale',
    async run(w) {
      const msg = await w.intercept('swallow', 'late');
      await w.drain(); // what is already on its way is verified on time
      w.clock.advance(MAX_AGE_MS + 60_000);
      await w.inject(msg);
      w.expectDead(msg.id, 'signature', SignatureError, sig('stale'));
    },
  },
  {
    name: 'a replay of the same signed bytes is dead-lettered: signature, replay; the original is handled once',
    async run(w) {
      const msg = await w.intercept('copy', 'legit-replayed');
      await w.inject(msg);
      w.expectDead(msg.id, 'signature', SignatureError, sig('replay'));
    },
  },
  {
    name: 'a JWT with alg=none is refused at login (UnauthorizedError, algorithm): no bus, nothing sent',
    async run(w) {
      await w.refusedLogin(`${b64({ alg: 'none', typ: 'JWT' })}.${b64(w.forgedClaims())}.`, 'algorithm');
    },
  },
  {
    name: 'an HS256 JWT MACed with the RS256 public key is refused at login (UnauthorizedError, algorithm)',
    async run(w) {
      const input = `${b64({ alg: 'HS256', typ: 'JWT', kid: LOGIN_KID })}.${b64(w.forgedClaims())}`;
      const mac = createHmac('sha256', loginKeyPair().publicPem).update(input).digest('base64url');
      await w.refusedLogin(`${input}.${mac}`, 'algorithm');
    },
  },
  {
    name: 'an expired JWT is refused at login (UnauthorizedError, expired)',
    async run(w) {
      const token = await w.token('order-service', ['order-writer'], {
        issuedAtMs: w.clock.now() - 10 * 60_000,
        ttlMs: 60_000,
      });
      await w.refusedLogin(token, 'expired');
    },
  },
  {
    name: 'a JWT for another audience is refused at login (UnauthorizedError, audience)',
    async run(w) {
      await w.refusedLogin(await w.token('order-service', ['order-writer'], { audience: 'billing-api' }), 'audience');
    },
  },
  {
    name: 'a publish to a forbidden topic is refused (ForbiddenError) and sends nothing; unsigned, it is dead-lettered',
    async run(w) {
      const refunds = `${w.prefix}.orders.refunds.issued`;
      const payments = `${w.prefix}.payments.charge`;
      const who = { action: 'publish', principal: 'order-service', tenant: 'acme' };
      await w.refusedAtPublish(
        () => w.publish(w.sender.bus, { n: 0, note: 'refund' }, { topic: refunds }),
        ForbiddenError,
        {
          ...who,
          topic: refunds,
          reason: 'denied',
        },
      );
      await w.refusedAtPublish(
        () => w.publish(w.sender.bus, { n: 0, note: 'charge' }, { topic: payments }),
        ForbiddenError,
        { ...who, topic: payments, reason: 'not-granted' },
      );
      await w.legitimate();
      // Around the sender's middleware, without its key: the consumer refuses it first thing.
      const bypass = await w.publish(w.rogue('order-service'), { n: 0, note: 'refund' }, { topic: refunds });
      w.expectDead(bypass.id, 'signature', SignatureError, sig('unsigned'));
    },
  },
  {
    name: 'a subscription to a forbidden pattern is refused (ForbiddenError) before the transport subscribes',
    async run(w) {
      const subscriptions = w.transportSubscriptions.length;
      const who = { action: 'subscribe', principal: 'billing-agent', tenant: 'acme' };
      for (const [pattern, reason] of [
        [`${w.prefix}.payments.>`, 'not-granted'],
        [`${w.prefix}.audit.secrets.>`, 'denied'],
        // Wider than its grants, and a deny lies inside it.
        [`${w.prefix}.>`, 'denied'],
      ] as const) {
        const err = await rejectionOf(() => w.consumer.bus.subscribe(pattern, () => {}, { group: `${w.prefix}-spy` }));
        expectTyped(err, ForbiddenError, { ...who, pattern, reason });
      }
      expect(w.transportSubscriptions.length).toBe(subscriptions);
    },
  },
  {
    name: 'an oversized payload is refused at publish (PayloadTooLargeError); bypassing it, dead-lettered: payload-too-large',
    async run(w) {
      const big: Order = { n: 0, note: 'big', blob: 'x'.repeat(5_000) };
      const rule = { rule: 'maxBytes' };
      await w.refusedAtPublish(() => w.publish(w.sender.bus, big), PayloadTooLargeError, rule);
      await w.legitimate();
      const signed = await w.publish(w.insider(), big);
      w.expectDead(signed.id, 'payload-too-large', PayloadTooLargeError, rule);
      await w.legitimate();
      // Without the key it never gets past the verifier, the first hook.
      const unsigned = await w.publish(w.rogue('order-service'), big);
      w.expectDead(unsigned.id, 'signature', SignatureError, sig('unsigned'));
    },
  },
  {
    name: 'a deeply nested payload is refused at publish (ValidationError); bypassing it, dead-lettered: validation',
    async run(w) {
      const deep: Order = { n: 0, note: 'deep', nested: nested(40) };
      const rule = { rule: 'maxDepth' };
      await w.refusedAtPublish(() => w.publish(w.sender.bus, deep), ValidationError, rule);
      await w.legitimate();
      const signed = await w.publish(w.insider(), deep);
      w.expectDead(signed.id, 'validation', ValidationError, rule);
    },
  },
  {
    name: 'a payload with too many keys is refused at publish (ValidationError); bypassing it, dead-lettered: validation',
    async run(w) {
      const wide: Order = {
        n: 0,
        note: 'wide',
        nested: Object.fromEntries(Array.from({ length: 60 }, (_, i) => [`k${i}`, i])),
      };
      const rule = { rule: 'maxKeys' };
      await w.refusedAtPublish(() => w.publish(w.sender.bus, wide), ValidationError, rule);
      await w.legitimate();
      const signed = await w.publish(w.insider(), wide);
      w.expectDead(signed.id, 'validation', ValidationError, rule);
    },
  },
  {
    name: 'a schema-invalid payload is refused at publish (ValidationError); bypassing it, dead-lettered: validation',
    async run(w) {
      const invalid = { n: 'seven', note: 'invalid' } as unknown as Order;
      const violation = { problem: 'invalid', type: ORDER_TYPE };
      await w.refusedAtPublish(() => w.publish(w.sender.bus, invalid), ValidationError, violation);
      await w.legitimate();
      const signed = await w.publish(w.insider(), invalid);
      w.expectDead(signed.id, 'validation', ValidationError, violation);
      await w.legitimate();
      const untyped = await w.publish(w.insider(), { n: 1, note: 'untyped' }, { type: 'order.unknown' });
      w.expectDead(untyped.id, 'validation', ValidationError, { problem: 'unknown-type', type: 'order.unknown' });
    },
  },
];

/**
 * The attack suite of issue 8 on one transport, with every security middleware stacked as a
 * deployment would: the consumer (billing agent) runs verifier → authorization → verification
 * pipeline → schema validation; the sender (order service) schema validation → verification
 * pipeline → authorization → signer. Both logged in with RS256 JWTs whose identity is their
 * principal. Each attack is sandwiched between legitimate orders: it is refused with the right
 * typed error — at publish or login where it starts on a legitimate bus, otherwise dead-lettered
 * by the consumer with the right reason, unseen by the handler — and every legitimate order is
 * handled exactly once. A last test runs every attack in one stream.
 *
 * The replay case republishes a message id already on the broker: a transport that drops
 * duplicate ids itself (JetStream's duplicate window) never delivers the copy.
 */
export function securityAttackConformance(o: SecurityAttackConformanceOptions): void {
  describe.skipIf(o.skipReason)(`security attacks on ${o.name}`, () => {
    let world: AttackWorld | undefined;
    afterEach(async () => {
      await world?.close();
      world = undefined;
    });
    const start = async () => {
      world = await AttackWorld.start(o);
      return world;
    };

    it('delivers legitimate orders through the whole stack: signed, schema-stamped, sent as the JWT identity', async () => {
      const w = await start();
      expect(w.sender.authz.principal).toEqual({ subject: 'order-service', roles: ['order-writer'], tenant: 'acme' });
      expect(w.consumer.authz.principal).toEqual({ subject: 'billing-agent', roles: ['order-reader'], tenant: 'acme' });
      await w.legitimate();
      await w.legitimate();
      await w.check();
      for (const env of w.handled) {
        expect(env.headers).toMatchObject({ 'x-agentbus-sig-kid': 'k1', 'x-agentbus-sig-alg': 'ed25519' });
        expect(env.schemaversion).toBe('1');
      }
      expect(w.transportSubscriptions).toEqual([`${w.prefix}.orders.>`]);
    });

    for (const c of CASES) {
      it(c.name, async () => {
        const w = await start();
        await w.legitimate();
        await c.run(w);
        await w.legitimate();
        await w.check();
      });
    }

    it('every attack in one stream between legitimate orders: each refused as alone, every order handled once', async () => {
      const w = await start();
      for (const c of CASES) {
        await w.legitimate();
        await c.run(w);
      }
      await w.legitimate();
      await w.check();
      expect(w.dead.length).toBeGreaterThanOrEqual(15);
    });
  });
}
