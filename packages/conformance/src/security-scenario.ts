import { createHmac } from 'node:crypto';
import {
  ForbiddenError,
  Keyring,
  PayloadTooLargeError,
  SignatureError,
  signEnvelope,
  signer,
  ValidationError,
} from '@agentbus/core';
import { afterEach, describe, expect, it } from 'vitest';
import {
  AttackWorld,
  type AttackWorldOptions,
  b64,
  ed25519Key,
  editBytes,
  editEnvelope,
  expectTyped,
  LOGIN_KID,
  loginKeyPair,
  MAX_AGE_MS,
  nested,
  ORDER_TYPE,
  type Order,
  rejectionOf,
} from './security-world.js';

export interface SecurityAttackConformanceOptions extends AttackWorldOptions {
  /** Shown in the describe block. */
  readonly name: string;
  /** If set, the block is skipped with this reason (a server unreachable outside CI). */
  readonly skipReason?: string | undefined;
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
      const reasons: Record<string, number> = {};
      for (const d of w.dead) reasons[d.reason] = (reasons[d.reason] ?? 0) + 1;
      expect(reasons).toEqual({ signature: 10, 'payload-too-large': 1, validation: 4 });
    });
  });
}
