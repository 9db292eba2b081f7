import { createHmac, generateKeyPairSync, type KeyObject, randomBytes, sign } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  ConfigError,
  createJwtIssuer,
  createJwtVerifier,
  errorFromWire,
  type JwtAlgorithm,
  type JwtIssuerOptions,
  type JwtVerifierOptions,
  ManualClock,
  UnauthorizedError,
} from '@agentbus/core';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ISS = 'https://auth.agentbus.test';
const AUD = 'agentbus-gateway';
const START = Date.UTC(2026, 0, 1);

const b64 = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString('base64url');

/** A compact JWS put together by hand, so that headers jose would never write can be tested. */
function compact(header: Record<string, unknown>, payload: unknown, signWith: (input: string) => Buffer): string {
  const input = `${b64(header)}.${typeof payload === 'string' ? payload : b64(payload)}`;
  return `${input}.${signWith(input).toString('base64url')}`;
}
const hs256 = (secret: Uint8Array | string) => (input: string) => createHmac('sha256', secret).update(input).digest();
const rs256 = (privateKey: KeyObject) => (input: string) => sign('sha256', Buffer.from(input), privateKey);

async function rejection(promise: Promise<unknown>): Promise<UnauthorizedError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(UnauthorizedError);
  return err as UnauthorizedError;
}

async function expectRefused(promise: Promise<unknown>, reason: string): Promise<UnauthorizedError> {
  const err = await rejection(promise);
  expect(err.code).toBe('UNAUTHORIZED');
  expect(err.data).toMatchObject({ reason });
  return err;
}

function rsaPair(modulusLength = 2048) {
  return generateKeyPairSync('rsa', { modulusLength });
}

const rsa = rsaPair();
const rsaOther = rsaPair();
const attacker = rsaPair();
const rsaPublicPem = rsa.publicKey.export({ type: 'spki', format: 'pem' }) as string;
const rsaPrivatePem = rsa.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
const ed = generateKeyPairSync('ed25519');
const secret = randomBytes(32);

function baseClaims(clock: ManualClock, extra: Record<string, unknown> = {}): Record<string, unknown> {
  const now = Math.floor(clock.now() / 1000);
  return { iss: ISS, aud: AUD, sub: 'agent-7', iat: now, exp: now + 300, ...extra };
}

function rsVerifier(clock: ManualClock, options: Partial<JwtVerifierOptions> = {}) {
  return createJwtVerifier({
    keys: [{ kid: 'rsa-1', key: rsaPublicPem, alg: 'RS256' }],
    algorithms: 'RS256',
    issuer: ISS,
    audience: AUD,
    clockToleranceSec: 0,
    clock,
    ...options,
  });
}

function rsIssuer(clock: ManualClock, options: Partial<JwtIssuerOptions> = {}) {
  return createJwtIssuer({
    key: rsaPrivatePem,
    alg: 'RS256',
    kid: 'rsa-1',
    issuer: ISS,
    audience: AUD,
    clock,
    ...options,
  });
}

describe('JWT issuer and verifier', () => {
  describe('round trips', () => {
    it('turns a token issued for an identity back into that identity (RS256, PEM keys)', async () => {
      const clock = new ManualClock(START);
      const token = await rsIssuer(clock).issue(
        { subject: 'agent-7', roles: ['planner', 'reader'], tenant: 'acme', claims: { model: 'small' } },
        { ttlMs: 60_000, jti: 'token-1' },
      );
      const identity = await rsVerifier(clock).verify(token);
      expect(identity).toEqual({
        subject: 'agent-7',
        roles: ['planner', 'reader'],
        tenant: 'acme',
        claims: {
          iss: ISS,
          aud: AUD,
          sub: 'agent-7',
          iat: START / 1000,
          exp: START / 1000 + 60,
          jti: 'token-1',
          roles: ['planner', 'reader'],
          tenant: 'acme',
          model: 'small',
        },
      });
    });

    it.each([
      { alg: 'ES256', keys: 'JWK objects' },
      { alg: 'EdDSA', keys: 'KeyObjects' },
      { alg: 'HS256', keys: 'a byte secret' },
    ] as const)('round-trips with $alg and $keys', async ({ alg }) => {
      const clock = new ManualClock(START);
      let signingKey: unknown;
      let verificationKey: unknown;
      if (alg === 'ES256') {
        const pair = await generateKeyPair('ES256', { extractable: true });
        signingKey = await exportJWK(pair.privateKey);
        verificationKey = await exportJWK(pair.publicKey);
      } else if (alg === 'EdDSA') {
        signingKey = ed.privateKey;
        verificationKey = ed.publicKey;
      } else {
        signingKey = secret;
        verificationKey = secret;
      }
      const issuer = createJwtIssuer({
        key: signingKey as JwtIssuerOptions['key'],
        alg,
        issuer: ISS,
        audience: [AUD, 'other'],
        clock,
      });
      const verifier = createJwtVerifier({
        keys: [{ key: verificationKey as JwtIssuerOptions['key'], alg }],
        issuer: ISS,
        audience: AUD,
        clock,
      });
      const identity = await verifier.verify(await issuer.issue({ subject: 'gateway-client', roles: [] }));
      expect(identity.subject).toBe('gateway-client');
      expect(identity.roles).toEqual([]);
      expect(identity.tenant).toBeUndefined();
      expect(identity.claims.aud).toEqual([AUD, 'other']);
      expect(identity.claims.exp).toBe(START / 1000 + 15 * 60);
    });

    it('accepts CryptoKeys and a string HMAC secret', async () => {
      const clock = new ManualClock(START);
      const pair = await generateKeyPair('ES256');
      const es = await createJwtIssuer({ key: pair.privateKey, alg: 'ES256', issuer: ISS, audience: AUD, clock }).issue(
        {
          subject: 'a',
        },
      );
      const esVerifier = createJwtVerifier({
        keys: [{ key: pair.publicKey, alg: 'ES256' }],
        issuer: ISS,
        audience: AUD,
        clock,
      });
      expect((await esVerifier.verify(es)).subject).toBe('a');

      const text = 'a shared secret that is long enough for HS256';
      const hs = await createJwtIssuer({ key: text, alg: 'HS256', issuer: ISS, audience: AUD, clock }).issue({
        subject: 'b',
      });
      const hsVerifier = createJwtVerifier({ keys: [{ key: text, alg: 'HS256' }], issuer: ISS, audience: AUD, clock });
      expect((await hsVerifier.verify(hs)).subject).toBe('b');
    });

    it('verifies with the public half of a configured private key, and with an oct JWK secret', async () => {
      const clock = new ManualClock(START);
      const token = await rsIssuer(clock).issue({ subject: 'p' });
      expect(
        (await rsVerifier(clock, { keys: [{ kid: 'rsa-1', key: rsaPrivatePem, alg: 'RS256' }] }).verify(token)).subject,
      ).toBe('p');
      expect(
        (
          await rsVerifier(clock, {
            keys: [{ kid: 'rsa-1', key: rsa.privateKey, alg: 'RS256' }],
            requireKid: true,
          }).verify(token)
        ).subject,
      ).toBe('p');
      const oct = { kty: 'oct', k: secret.toString('base64url') };
      const hs = await createJwtIssuer({ key: oct, alg: 'HS256', issuer: ISS, audience: AUD, clock }).issue({
        subject: 'o',
      });
      const verifier = createJwtVerifier({ keys: [{ key: secret, alg: 'HS256' }], issuer: ISS, audience: AUD, clock });
      expect((await verifier.verify(hs)).subject).toBe('o');
    });

    it('re-issues a verified identity with fresh registered claims', async () => {
      const clock = new ManualClock(START);
      const issuer = rsIssuer(clock);
      const verifier = rsVerifier(clock);
      const first = await verifier.verify(await issuer.issue({ subject: 's', roles: ['r'] }, { ttlMs: 10_000 }));
      clock.advance(5_000);
      const second = await verifier.verify(await issuer.issue(first, { ttlMs: 10_000 }));
      expect(second.roles).toEqual(['r']);
      expect(second.claims.iat).toBe(START / 1000 + 5);
      expect(second.claims.exp).toBe(START / 1000 + 15);
    });

    it('picks the key named by kid, and tries the keys of the algorithm when there is none', async () => {
      const clock = new ManualClock(START);
      const verifier = createJwtVerifier({
        keys: [
          { kid: 'old', key: rsaOther.publicKey, alg: 'RS256' },
          { kid: 'new', key: rsa.publicKey, alg: 'RS256' },
          { key: secret, alg: 'HS256' },
        ],
        algorithms: ['RS256', 'HS256'],
        issuer: ISS,
        audience: AUD,
        clock,
      });
      const named = await rsIssuer(clock, { kid: 'new' }).issue({ subject: 'named' });
      expect((await verifier.verify(named)).subject).toBe('named');
      const unnamed = await rsIssuer(clock, { kid: undefined }).issue({ subject: 'unnamed' });
      expect((await verifier.verify(unnamed)).subject).toBe('unnamed');
      const hs = await createJwtIssuer({ key: secret, alg: 'HS256', issuer: ISS, audience: AUD, clock }).issue({
        subject: 'hs',
      });
      expect((await verifier.verify(hs)).subject).toBe('hs');
    });

    it('accepts any configured issuer and audience', async () => {
      const clock = new ManualClock(START);
      const token = await rsIssuer(clock, { issuer: 'second', audience: ['x', 'y'] }).issue({ subject: 's' });
      const verifier = rsVerifier(clock, { issuer: [ISS, 'second'], audience: ['y', 'z'] });
      expect((await verifier.verify(token)).subject).toBe('s');
    });
  });

  describe('claims to identity', () => {
    it('reads roles from a configured claim or a path, and the tenant from a configured claim', async () => {
      const clock = new ManualClock(START);
      const flat = compact({ alg: 'HS256' }, baseClaims(clock, { groups: ['ops'], org: 'acme' }), hs256(secret));
      const nested = compact(
        { alg: 'HS256' },
        baseClaims(clock, { realm_access: { roles: ['admin'] } }),
        hs256(secret),
      );
      const keys = [{ key: secret, alg: 'HS256' as const }];
      const byName = createJwtVerifier({
        keys,
        issuer: ISS,
        audience: AUD,
        rolesClaim: 'groups',
        tenantClaim: 'org',
        clock,
      });
      expect(await byName.verify(flat)).toMatchObject({ roles: ['ops'], tenant: 'acme' });
      const byPath = createJwtVerifier({
        keys,
        issuer: ISS,
        audience: AUD,
        rolesClaim: ['realm_access', 'roles'],
        clock,
      });
      expect((await byPath.verify(nested)).roles).toEqual(['admin']);
      expect((await byPath.verify(flat)).roles).toEqual([]);
    });

    it('issues roles and tenant under configured claim names', async () => {
      const clock = new ManualClock(START);
      const token = await createJwtIssuer({
        key: secret,
        alg: 'HS256',
        issuer: ISS,
        audience: AUD,
        rolesClaim: 'groups',
        tenantClaim: 'org',
        clock,
      }).issue({ subject: 's', roles: ['ops'], tenant: 't', claims: { groups: ['ignored'], exp: 1 } });
      const verifier = createJwtVerifier({
        keys: [{ key: secret, alg: 'HS256' }],
        issuer: ISS,
        audience: AUD,
        rolesClaim: 'groups',
        tenantClaim: 'org',
        clock,
      });
      const identity = await verifier.verify(token);
      expect(identity).toMatchObject({ roles: ['ops'], tenant: 't' });
      expect(identity.claims.exp).toBe(START / 1000 + 15 * 60);
    });

    it.each([
      ['roles is a string', { roles: 'admin' }, 'roles'],
      ['roles holds a number', { roles: ['a', 1] }, 'roles'],
      ['tenant is a number', { tenant: 42 }, 'tenant'],
      ['tenant is empty', { tenant: '' }, 'tenant'],
      ['sub is missing', { sub: undefined }, 'sub'],
      ['sub is a number', { sub: 7 }, 'sub'],
      ['exp is a string', { exp: 'soon' }, 'exp'],
      ['nbf is a string', { nbf: 'now' }, 'nbf'],
    ])('refuses a token whose %s (invalid-claim)', async (_, extra, claim) => {
      const clock = new ManualClock(START);
      const verifier = createJwtVerifier({ keys: [{ key: secret, alg: 'HS256' }], issuer: ISS, audience: AUD, clock });
      const err = await expectRefused(
        verifier.verify(compact({ alg: 'HS256' }, baseClaims(clock, extra), hs256(secret))),
        'invalid-claim',
      );
      expect(err.data).toMatchObject({ claim });
    });
  });

  describe('time, on the injected clock', () => {
    it('refuses an expired token (expired), within the tolerance it still passes', async () => {
      const clock = new ManualClock(START);
      const token = await rsIssuer(clock).issue({ subject: 's' }, { ttlMs: 60_000 });
      const strict = rsVerifier(clock);
      const lenient = rsVerifier(clock, { clockToleranceSec: 30 });
      clock.advance(59_999);
      expect((await strict.verify(token)).subject).toBe('s');
      clock.advance(1);
      await expectRefused(strict.verify(token), 'expired');
      expect((await lenient.verify(token)).subject).toBe('s');
      clock.advance(30_000);
      await expectRefused(lenient.verify(token), 'expired');
    });

    it('refuses a token before its nbf (not-yet-valid) and accepts it from then on', async () => {
      const clock = new ManualClock(START);
      const token = await rsIssuer(clock).issue({ subject: 's' }, { notBeforeMs: START + 60_000, ttlMs: 120_000 });
      const verifier = rsVerifier(clock);
      await expectRefused(verifier.verify(token), 'not-yet-valid');
      clock.advance(60_000);
      expect((await verifier.verify(token)).subject).toBe('s');
    });

    it('refuses a token issued in the future beyond the tolerance (not-yet-valid)', async () => {
      const clock = new ManualClock(START);
      const ahead = new ManualClock(START + 60_000);
      const token = await rsIssuer(ahead).issue({ subject: 's' });
      const err = await expectRefused(rsVerifier(clock, { clockToleranceSec: 10 }).verify(token), 'not-yet-valid');
      expect(err.data).toMatchObject({ claim: 'iat' });
      expect((await rsVerifier(clock, { clockToleranceSec: 60 }).verify(token)).subject).toBe('s');
    });

    it('refuses a token without exp (missing-exp)', async () => {
      const clock = new ManualClock(START);
      const noExp = await new SignJWT({ sub: 's' })
        .setProtectedHeader({ alg: 'RS256', kid: 'rsa-1' })
        .setIssuer(ISS)
        .setAudience(AUD)
        .setIssuedAt(START / 1000)
        .sign(rsa.privateKey);
      await expectRefused(rsVerifier(clock).verify(noExp), 'missing-exp');
    });

    it('refuses a token that claims a longer life than maxLifetimeMs (lifetime-too-long)', async () => {
      const clock = new ManualClock(START);
      const issuer = rsIssuer(clock);
      const verifier = rsVerifier(clock, { maxLifetimeMs: 3_600_000 });
      expect((await verifier.verify(await issuer.issue({ subject: 's' }, { ttlMs: 3_600_000 }))).subject).toBe('s');
      await expectRefused(
        verifier.verify(await issuer.issue({ subject: 's' }, { ttlMs: 3_601_000 })),
        'lifetime-too-long',
      );
      // Without iat the rest of its life counts.
      const noIat = compact(
        { alg: 'HS256' },
        { ...baseClaims(clock), iat: undefined, exp: START / 1000 + 7200 },
        hs256(secret),
      );
      const hs = createJwtVerifier({
        keys: [{ key: secret, alg: 'HS256' }],
        issuer: ISS,
        audience: AUD,
        maxLifetimeMs: 3_600_000,
        clock,
      });
      await expectRefused(hs.verify(noIat), 'lifetime-too-long');
      clock.advance(3_600_000);
      expect((await hs.verify(noIat)).subject).toBe('agent-7');
    });
  });

  describe('attacks', () => {
    it.each(['none', 'None', 'NONE', 'nOnE'])('refuses an unsigned token with alg=%s (algorithm)', async (alg) => {
      const clock = new ManualClock(START);
      const unsigned = `${b64({ alg, typ: 'JWT' })}.${b64(baseClaims(clock, { roles: ['admin'] }))}.`;
      await expectRefused(rsVerifier(clock).verify(unsigned), 'algorithm');
      const withKid = `${b64({ alg, kid: 'rsa-1' })}.${b64(baseClaims(clock))}.`;
      await expectRefused(rsVerifier(clock).verify(withKid), 'algorithm');
    });

    it('refuses an HS256 token MACed with the RSA public key PEM (algorithm confusion)', async () => {
      const clock = new ManualClock(START);
      const forged = compact(
        { alg: 'HS256', typ: 'JWT' },
        baseClaims(clock, { roles: ['admin'] }),
        hs256(rsaPublicPem),
      );
      await expectRefused(rsVerifier(clock).verify(forged), 'algorithm');
      const withKid = compact({ alg: 'HS256', kid: 'rsa-1' }, baseClaims(clock), hs256(rsaPublicPem));
      await expectRefused(rsVerifier(clock).verify(withKid), 'algorithm');
      // Where HS256 is accepted too, the RSA key still never serves as an HMAC secret.
      const mixed = createJwtVerifier({
        keys: [
          { kid: 'rsa-1', key: rsaPublicPem, alg: 'RS256' },
          { key: secret, alg: 'HS256' },
        ],
        issuer: ISS,
        audience: AUD,
        clock,
      });
      await expectRefused(mixed.verify(forged), 'bad-signature');
      await expectRefused(mixed.verify(withKid), 'algorithm');
    });

    it('refuses an algorithm outside the configured list even with a valid signature (algorithm)', async () => {
      const clock = new ManualClock(START);
      const ps = await new SignJWT(baseClaims(clock)).setProtectedHeader({ alg: 'PS256' }).sign(rsa.privateKey);
      await expectRefused(rsVerifier(clock).verify(ps), 'algorithm');
    });

    it('refuses a token signed with another key (bad-signature)', async () => {
      const clock = new ManualClock(START);
      const forged = compact({ alg: 'RS256', kid: 'rsa-1' }, baseClaims(clock), rs256(attacker.privateKey));
      await expectRefused(rsVerifier(clock).verify(forged), 'bad-signature');
      const noKid = compact({ alg: 'RS256' }, baseClaims(clock), rs256(attacker.privateKey));
      await expectRefused(rsVerifier(clock).verify(noKid), 'bad-signature');
      const wrongSecret = compact({ alg: 'HS256' }, baseClaims(clock), hs256(randomBytes(32)));
      const hs = createJwtVerifier({ keys: [{ key: secret, alg: 'HS256' }], issuer: ISS, audience: AUD, clock });
      await expectRefused(hs.verify(wrongSecret), 'bad-signature');
    });

    it('refuses a token whose payload was changed after signing (bad-signature)', async () => {
      const clock = new ManualClock(START);
      const token = await rsIssuer(clock).issue({ subject: 'agent-7', roles: ['reader'] });
      const [header, , signature] = token.split('.');
      const tampered = `${header}.${b64(baseClaims(clock, { roles: ['admin'] }))}.${signature}`;
      await expectRefused(rsVerifier(clock).verify(tampered), 'bad-signature');
      const flipped = `${token.slice(0, -2)}${token.endsWith('A') ? 'B' : 'A'}${token.slice(-1)}`;
      await expectRefused(rsVerifier(clock).verify(flipped), 'bad-signature');
    });

    it('refuses a kid outside the configured set (unknown-kid) and a kid used with another alg (algorithm)', async () => {
      const clock = new ManualClock(START);
      const unknown = compact({ alg: 'RS256', kid: 'attacker' }, baseClaims(clock), rs256(attacker.privateKey));
      await expectRefused(rsVerifier(clock).verify(unknown), 'unknown-kid');
      const traversal = compact({ alg: 'RS256', kid: '../../dev/null' }, baseClaims(clock), rs256(attacker.privateKey));
      await expectRefused(rsVerifier(clock).verify(traversal), 'unknown-kid');
      const mixed = createJwtVerifier({
        keys: [
          { kid: 'rsa-1', key: rsa.publicKey, alg: 'RS256' },
          { kid: 'hs', key: secret, alg: 'HS256' },
        ],
        issuer: ISS,
        audience: AUD,
        clock,
      });
      const crossed = compact({ alg: 'RS256', kid: 'hs' }, baseClaims(clock), rs256(rsa.privateKey));
      await expectRefused(mixed.verify(crossed), 'algorithm');
    });

    it('refuses a token without kid when requireKid is set (missing-kid)', async () => {
      const clock = new ManualClock(START);
      const token = await rsIssuer(clock, { kid: undefined }).issue({ subject: 's' });
      await expectRefused(rsVerifier(clock, { requireKid: true }).verify(token), 'missing-kid');
    });

    it('refuses a header that embeds its own key, even a correctly signed one (untrusted-key-reference)', async () => {
      const clock = new ManualClock(START);
      const jwk = attacker.publicKey.export({ format: 'jwk' });
      const embedded = compact({ alg: 'RS256', jwk }, baseClaims(clock), rs256(attacker.privateKey));
      await expectRefused(rsVerifier(clock).verify(embedded), 'untrusted-key-reference');
      const withKnownKid = compact({ alg: 'RS256', kid: 'rsa-1', jwk }, baseClaims(clock), rs256(rsa.privateKey));
      await expectRefused(rsVerifier(clock).verify(withKnownKid), 'untrusted-key-reference');
      const x5c = compact({ alg: 'RS256', x5c: ['MIIB'] }, baseClaims(clock), rs256(attacker.privateKey));
      await expectRefused(rsVerifier(clock).verify(x5c), 'untrusted-key-reference');
    });

    describe('key URLs in the header', () => {
      let server: Server;
      let requests = 0;
      let url = '';
      beforeAll(async () => {
        const jwks = { keys: [{ ...attacker.publicKey.export({ format: 'jwk' }), kid: 'attacker', alg: 'RS256' }] };
        server = createServer((_req, res) => {
          requests += 1;
          res.setHeader('content-type', 'application/json');
          res.end(JSON.stringify(jwks));
        });
        await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
        url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      });
      afterAll(async () => {
        await new Promise((resolve) => server.close(resolve));
      });

      it('refuses jku and x5u without a single request to the URL (untrusted-key-reference)', async () => {
        const clock = new ManualClock(START);
        const verifier = rsVerifier(clock);
        const tokens = [
          compact(
            { alg: 'RS256', kid: 'attacker', jku: `${url}/jwks.json` },
            baseClaims(clock),
            rs256(attacker.privateKey),
          ),
          compact({ alg: 'RS256', kid: 'rsa-1', jku: `${url}/jwks.json` }, baseClaims(clock), rs256(rsa.privateKey)),
          compact({ alg: 'RS256', jku: `${url}/jwks.json` }, baseClaims(clock), rs256(attacker.privateKey)),
          compact({ alg: 'RS256', x5u: `${url}/cert.pem` }, baseClaims(clock), rs256(attacker.privateKey)),
        ];
        for (const token of tokens) await expectRefused(verifier.verify(token), 'untrusted-key-reference');
        // The server is live: a fetch would have been counted.
        const probe = await fetch(`${url}/jwks.json`);
        expect(probe.status).toBe(200);
        await probe.arrayBuffer();
        expect(requests).toBe(1);
      });
    });

    it('refuses a wrong audience (audience) and a wrong issuer (issuer)', async () => {
      const clock = new ManualClock(START);
      const verifier = rsVerifier(clock);
      await expectRefused(
        verifier.verify(await rsIssuer(clock, { audience: 'elsewhere' }).issue({ subject: 's' })),
        'audience',
      );
      await expectRefused(
        verifier.verify(await rsIssuer(clock, { issuer: 'https://evil.test' }).issue({ subject: 's' })),
        'issuer',
      );
      const noAud = compact({ alg: 'RS256' }, { ...baseClaims(clock), aud: undefined }, rs256(rsa.privateKey));
      await expectRefused(verifier.verify(noAud), 'audience');
      const noIss = compact({ alg: 'RS256' }, { ...baseClaims(clock), iss: undefined }, rs256(rsa.privateKey));
      await expectRefused(verifier.verify(noIss), 'issuer');
    });

    it('refuses an unknown critical header (malformed)', async () => {
      const clock = new ManualClock(START);
      const token = compact({ alg: 'RS256', crit: ['x-ext'], 'x-ext': 1 }, baseClaims(clock), rs256(rsa.privateKey));
      await expectRefused(rsVerifier(clock).verify(token), 'malformed');
    });

    const junk: Array<[string, unknown]> = [
      ['an empty string', ''],
      ['one segment', 'abc'],
      ['two segments', 'abc.def'],
      ['four segments', 'a.b.c.d'],
      ['only dots', '..'],
      ['characters outside base64url', 'ab+c.de/f.gh='],
      ['whitespace', ` ${b64({ alg: 'RS256' })}.${b64({})}.sig`],
      ['a header that is not JSON', `${Buffer.from('{alg:RS256').toString('base64url')}.${b64({})}.c2ln`],
      ['a header that is a JSON array', `${b64(['RS256'])}.${b64({})}.c2ln`],
      ['a header without alg', `${b64({ typ: 'JWT' })}.${b64({})}.c2ln`],
      ['a non-string', 42],
      ['null', null],
      ['a JWE-like token', `${b64({ alg: 'dir', enc: 'A256GCM' })}.a.b.c.d`],
    ];
    it.each(junk)('refuses %s (malformed or algorithm)', async (_, token) => {
      const clock = new ManualClock(START);
      const err = await rejection(rsVerifier(clock).verify(token as string));
      expect(['malformed', 'algorithm']).toContain((err.data as { reason: string }).reason);
    });

    it('refuses malformed structure as malformed specifically', async () => {
      const clock = new ManualClock(START);
      const verifier = rsVerifier(clock);
      for (const token of ['', 'abc', 'a.b.c.d', `${b64(['x'])}.${b64({})}.c2ln`]) {
        await expectRefused(verifier.verify(token), 'malformed');
      }
      await expectRefused(verifier.verify(`${b64({ typ: 'JWT' })}.${b64({})}.c2ln`), 'algorithm');
      const notJsonPayload = compact(
        { alg: 'RS256' },
        Buffer.from('not json').toString('base64url'),
        rs256(rsa.privateKey),
      );
      await expectRefused(verifier.verify(notJsonPayload), 'malformed');
      const arrayPayload = compact({ alg: 'RS256' }, [1, 2], rs256(rsa.privateKey));
      await expectRefused(verifier.verify(arrayPayload), 'malformed');
      const kidNumber = compact({ alg: 'RS256', kid: 7 }, baseClaims(clock), rs256(rsa.privateKey));
      await expectRefused(verifier.verify(kidNumber), 'malformed');
    });

    it('refuses an oversized token before reading it (malformed)', async () => {
      const clock = new ManualClock(START);
      const huge = compact({ alg: 'RS256' }, baseClaims(clock, { pad: 'x'.repeat(10_000) }), rs256(rsa.privateKey));
      await expectRefused(rsVerifier(clock).verify(huge), 'malformed');
      expect((await rsVerifier(clock, { maxTokenLength: 20_000 }).verify(huge)).subject).toBe('agent-7');
    });
  });

  describe('errors', () => {
    it('names no token and no key material, and keeps its reason across the wire', async () => {
      const clock = new ManualClock(START);
      const forged = compact({ alg: 'HS256', kid: 'rsa-1' }, baseClaims(clock), hs256(rsaPublicPem));
      const tokens = [forged, compact({ alg: 'RS256' }, baseClaims(clock), rs256(attacker.privateKey))];
      for (const token of tokens) {
        const err = await rejection(rsVerifier(clock).verify(token));
        const text = `${err.message} ${JSON.stringify(err.toWire())} ${String(err.stack)}`;
        for (const part of token.split('.')) expect(text).not.toContain(part);
        expect(text).not.toContain('BEGIN');
        expect(err.cause).toBeUndefined();
        const back = errorFromWire(err.toWire());
        expect(back).toBeInstanceOf(UnauthorizedError);
        expect(back.data).toEqual(err.data);
      }
    });

    it('refuses misconfiguration with a ConfigError naming the option', () => {
      const clock = new ManualClock(START);
      const base = { issuer: ISS, audience: AUD, clock };
      const cases: Array<[string, () => unknown]> = [
        ['keys', () => createJwtVerifier({ ...base, keys: [] })],
        ['keys[0].alg', () => createJwtVerifier({ ...base, keys: [{ key: secret, alg: 'none' as JwtAlgorithm }] })],
        [
          'algorithms[1]',
          () =>
            createJwtVerifier({
              ...base,
              keys: [{ key: secret, alg: 'HS256' }],
              algorithms: ['HS256', 'none' as JwtAlgorithm],
            }),
        ],
        [
          'algorithms',
          () => createJwtVerifier({ ...base, keys: [{ key: secret, alg: 'HS256' }], algorithms: 'RS256' }),
        ],
        [
          'algorithms',
          () => createJwtVerifier({ ...base, keys: [{ key: secret, alg: 'HS256' }], algorithms: ['HS256', 'RS256'] }),
        ],
        ['keys[0].key', () => createJwtVerifier({ ...base, keys: [{ key: rsaPublicPem, alg: 'HS256' }] })],
        ['keys[0].key', () => createJwtVerifier({ ...base, keys: [{ key: randomBytes(31), alg: 'HS256' }] })],
        ['keys[0].key', () => createJwtVerifier({ ...base, keys: [{ key: secret, alg: 'HS512' }] })],
        ['keys[0].key', () => createJwtVerifier({ ...base, keys: [{ key: rsa.publicKey, alg: 'ES256' }] })],
        ['keys[0].key', () => createJwtVerifier({ ...base, keys: [{ key: ed.publicKey, alg: 'RS256' }] })],
        ['keys[0].key', () => createJwtVerifier({ ...base, keys: [{ key: rsaPair(1024).publicKey, alg: 'RS256' }] })],
        ['keys[0].key', () => createJwtVerifier({ ...base, keys: [{ key: 'not a pem', alg: 'RS256' }] })],
        [
          'keys[0].key',
          () =>
            createJwtVerifier({
              ...base,
              keys: [{ key: '-----BEGIN PUBLIC KEY-----\nxx\n-----END PUBLIC KEY-----', alg: 'RS256' }],
            }),
        ],
        ['keys[0].key', () => createJwtVerifier({ ...base, keys: [{ key: secret, alg: 'RS256' }] })],
        [
          'keys[1].kid',
          () =>
            createJwtVerifier({
              ...base,
              keys: [
                { kid: 'a', key: secret, alg: 'HS256' },
                { kid: 'a', key: rsaPublicPem, alg: 'RS256' },
              ],
            }),
        ],
        ['issuer', () => createJwtVerifier({ ...base, issuer: '', keys: [{ key: secret, alg: 'HS256' }] })],
        ['audience', () => createJwtVerifier({ ...base, audience: [], keys: [{ key: secret, alg: 'HS256' }] })],
        [
          'clockToleranceSec',
          () => createJwtVerifier({ ...base, clockToleranceSec: -1, keys: [{ key: secret, alg: 'HS256' }] }),
        ],
        [
          'maxLifetimeMs',
          () => createJwtVerifier({ ...base, maxLifetimeMs: 0, keys: [{ key: secret, alg: 'HS256' }] }),
        ],
        ['key', () => createJwtIssuer({ ...base, key: rsaPublicPem, alg: 'RS256' })],
        ['key', () => createJwtIssuer({ ...base, key: rsa.publicKey, alg: 'RS256' })],
        ['alg', () => createJwtIssuer({ ...base, key: secret, alg: 'none' as JwtAlgorithm })],
        ['defaultTtlMs', () => createJwtIssuer({ ...base, key: secret, alg: 'HS256', defaultTtlMs: 500 })],
        [
          'defaultTtlMs',
          () => createJwtIssuer({ ...base, key: secret, alg: 'HS256', defaultTtlMs: 2_000, maxTtlMs: 1_000 }),
        ],
      ];
      for (const [path, make] of cases) {
        let caught: unknown;
        try {
          make();
        } catch (err) {
          caught = err;
        }
        expect(caught, path).toBeInstanceOf(ConfigError);
        expect((caught as ConfigError).path, path).toBe(path);
        expect((caught as ConfigError).message).not.toContain('BEGIN');
      }
    });

    it('refuses bad issue input with a ConfigError', async () => {
      const issuer = createJwtIssuer({ key: secret, alg: 'HS256', issuer: ISS, audience: AUD, maxTtlMs: 60_000 });
      await expect(issuer.issue({ subject: '' })).rejects.toBeInstanceOf(ConfigError);
      await expect(issuer.issue({ subject: 's', roles: ['ok', 3 as unknown as string] })).rejects.toBeInstanceOf(
        ConfigError,
      );
      await expect(issuer.issue({ subject: 's' }, { ttlMs: 120_000 })).rejects.toBeInstanceOf(ConfigError);
      await expect(issuer.issue({ subject: 's' }, { ttlMs: Number.NaN })).rejects.toBeInstanceOf(ConfigError);
    });
  });
});
