/**
 * The deployment the security attack scenario (`securityAttackConformance`) attacks: a
 * login service, a policy, a schema registry, a verification pipeline, two agents with every
 * security middleware stacked, and an attacker with a client of the same broker and a seat on
 * the sender's link to it. Internal to the conformance package.
 */
import { generateKeyPairSync, type KeyObject, randomUUID } from 'node:crypto';
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
  type JwtVerifier,
  jsonCodec,
  Keyring,
  ManualClock,
  type Middleware,
  type SigningKeySpec,
  schemaValidation,
  signer,
  silentLogger,
  type Transport,
  type TransportMessage,
  UnauthorizedError,
  verification,
  verificationPipeline,
  verifier,
} from '@agentbus/core';
import { expect } from 'vitest';
import { until } from './wait.js';

/** How {@link AttackWorld} reaches the transport under test. */
export interface AttackWorldOptions {
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
}

const ISSUER = 'https://login.agentbus.test';
const AUDIENCE = 'agentbus-gateway';
export const LOGIN_KID = 'login-1';
export const ORDER_TYPE = 'order.created';
const START = Date.UTC(2026, 5, 1, 9);
/** The verifier's limits: a signature from up to 30 s ahead, at most 60 s old. */
const TOLERANCE_MS = 30_000;
export const MAX_AGE_MS = 60_000;
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

export interface Order {
  readonly n: number;
  readonly note: string;
  readonly blob?: string;
  readonly nested?: unknown;
}

export type ErrorClass = new (message: string) => BusError;

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
export function loginKeyPair() {
  loginKeys ??= (() => {
    const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    return { privateKey, publicKey, publicPem: publicKey.export({ type: 'spki', format: 'pem' }) as string };
  })();
  return loginKeys;
}

export function ed25519Key(kid: string): { readonly signing: SigningKeySpec; readonly verifying: SigningKeySpec } {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return { signing: { kid, algorithm: 'ed25519', privateKey }, verifying: { kid, algorithm: 'ed25519', publicKey } };
}

export function nested(depth: number): Record<string, unknown> {
  let v: Record<string, unknown> = { leaf: true };
  for (let i = 1; i < depth; i++) v = { v };
  return v;
}

export const b64 = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString('base64url');
const codec = jsonCodec();

/** `msg` with its encoded envelope decoded, changed by `edit` and encoded again. */
export function editEnvelope(msg: TransportMessage, edit: (env: Envelope) => Envelope): TransportMessage {
  return { ...msg, body: codec.encode(edit(codec.decode(msg.body))) };
}

/** `msg` with the first occurrence of `from` in its bytes replaced by `to`. */
export function editBytes(msg: TransportMessage, from: string, to: string): TransportMessage {
  const text = Buffer.from(msg.body).toString('utf8');
  if (!text.includes(from)) throw new Error(`${from} is not in the message bytes`);
  return { ...msg, body: Buffer.from(text.replace(from, to), 'utf8') };
}

export async function rejectionOf(run: () => Promise<unknown>): Promise<unknown> {
  return run().then(
    () => undefined,
    (err: unknown) => err,
  );
}

export function expectTyped(err: unknown, cls: ErrorClass, data: Readonly<Record<string, unknown>>): void {
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
export class AttackWorld {
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

  readonly #o: AttackWorldOptions;
  readonly #transports: Transport[] = [];
  readonly #buses: Bus[] = [];
  #shared: Transport | undefined;
  #n = 0;
  sender!: Agent;
  consumer!: Agent;
  /** The attacker's own client of the broker. */
  attacker!: Transport;

  constructor(o: AttackWorldOptions) {
    this.#o = o;
    this.registry.register({ type: ORDER_TYPE, version: 1, schema: ORDER_SCHEMA });
  }

  static async start(o: AttackWorldOptions): Promise<AttackWorld> {
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
      async () =>
        this.handled.length > this.legit.length || // an attack got through: check() says which
        (this.handled.length === this.legit.length && (await this.deadLetters()).length >= this.dead.length),
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
