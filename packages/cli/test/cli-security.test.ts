import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Envelope } from '@agentbus/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DeadLetterView } from '../src/dlq/dead-letter-view.js';
import { agentbus, CliProcess, type Finished, json } from './cli-process.js';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'agentbus-cli-security-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A fresh database file per test, so tests share nothing. */
function sqliteUrl(name: string): string {
  return `sqlite:${join(dir, `${name}.db`)}`;
}

/** Writes `text` to a file in the test directory with `mode` (0600 unless told) and returns its path. */
function file(name: string, text: string | Buffer, mode = 0o600): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  chmodSync(path, mode);
  return path;
}

/** The JSON of a one-key HMAC keyring (active unless told otherwise). */
function hmacKeyring(kid: string, secret: Buffer = randomBytes(32), active = true): string {
  return JSON.stringify({
    ...(active ? { active: kid } : {}),
    keys: [{ kid, algorithm: 'hmac-sha256', secret: `base64:${secret.toString('base64')}` }],
  });
}

/** Neither stream of `out` contains `secret`. */
function neverShows(out: Finished, secret: string): void {
  expect(out.stdout).not.toContain(secret);
  expect(out.stderr).not.toContain(secret);
}

const count = (text: string, needle: string) => text.split(needle).length - 1;

// Each test runs several CLI processes (node + tsx, ~0.5 s of CPU each) beside the other tests.
const SLOW = { timeout: 90_000 };

describe.concurrent('agentbus publish and tail with a keyring', SLOW, () => {
  it('publish signs, tail verifies: unsigned and forged messages are refused, reported and dead-lettered', async () => {
    const transport = sqliteUrl('signed');
    const secret = randomBytes(32);
    const ring = file('ring.json', hmacKeyring('k1', secret));
    // Same kid, another secret: what a forger without the key would sign with.
    const forged = file('forged.json', hmacKeyring('k1'));
    const tail = new CliProcess(['--transport', transport, 'tail', 'orders.>', '--count', '1', '--json'], {
      AGENTBUS_KEYRING_FILE: ring,
    });
    await tail.waitFor((p) => p.stderr.includes('tailing'), 'tail to subscribe');

    const unsigned = await agentbus(['--transport', transport, 'publish', 'orders.created', '{"n":1}']);
    expect(unsigned.code, unsigned.stderr).toBe(0);
    const unsignedId = unsigned.stdout.trim();
    await tail.waitFor((p) => p.stderr.includes(`refused ${unsignedId}`), 'the unsigned message to be refused');

    const fake = await agentbus([
      '--transport',
      transport,
      '--keyring',
      forged,
      'publish',
      'orders.created',
      '{"n":2}',
    ]);
    expect(fake.code, fake.stderr).toBe(0);
    const fakeId = fake.stdout.trim();
    await tail.waitFor((p) => p.stderr.includes(`refused ${fakeId}`), 'the forged message to be refused');

    const good = await agentbus(['--transport', transport, '--keyring', ring, 'publish', 'orders.created', '{"n":3}']);
    expect(good.code, good.stderr).toBe(0);
    const out = await tail.exit();
    expect(out.code, out.stderr).toBe(0);
    const env = JSON.parse(out.stdout.trim()) as Envelope;
    expect(env).toMatchObject({ id: good.stdout.trim(), data: { n: 3 } });
    expect(env.headers?.['x-agentbus-sig-kid']).toBe('k1');

    expect(out.stderr).toMatch(
      new RegExp(
        `^refused ${unsignedId} on orders\\.created from agentbus-cli: SIGNATURE \\(unsigned\\): .*; dead-lettered with reason signature$`,
        'm',
      ),
    );
    expect(out.stderr).toMatch(new RegExp(`^refused ${fakeId} .*SIGNATURE \\(bad-signature\\): `, 'm'));
    neverShows(out, secret.toString('base64'));

    const dead = json<DeadLetterView[]>(
      await agentbus(['--transport', transport, 'dlq', 'list', '--reason', 'signature', '--json']),
    );
    expect(dead.map((d) => d.messageId).sort()).toEqual([unsignedId, fakeId].sort());
    expect(dead.every((d) => d.group === 'tail' && d.attempts === 1)).toBe(true);
  });

  it('verifies Ed25519 signatures with a keyring that holds only the public key', async () => {
    const transport = sqliteUrl('ed25519');
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    const pem = privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
    const raw = publicKey.export({ format: 'der', type: 'spki' }).subarray(-32);
    const signing = file(
      'ed-signing.json',
      JSON.stringify({ active: 'e1', keys: [{ kid: 'e1', algorithm: 'ed25519', privateKey: pem }] }),
    );
    const verifying = JSON.stringify({
      keys: [{ kid: 'e1', algorithm: 'ed25519', publicKey: `base64url:${raw.toString('base64url')}` }],
    });
    const tail = new CliProcess(['--transport', transport, 'tail', 'ed.>', '--count', '1', '--json'], {
      AGENTBUS_KEYRING: verifying,
    });
    await tail.waitFor((p) => p.stderr.includes('tailing'), 'tail to subscribe');
    const pub = await agentbus(['--transport', transport, '--keyring', signing, 'publish', 'ed.x', '{"ok":true}']);
    expect(pub.code, pub.stderr).toBe(0);
    const out = await tail.exit();
    expect(out.code, out.stderr).toBe(0);
    expect(JSON.parse(out.stdout)).toMatchObject({ id: pub.stdout.trim(), data: { ok: true } });
    expect(out.stderr).not.toContain('refused');
  });

  it('takes --keyring over $AGENTBUS_KEYRING_FILE over $AGENTBUS_KEYRING', async () => {
    const flag = file('precedence-flag.json', hmacKeyring('from-flag'));
    const fileEnv = file('precedence-env.json', hmacKeyring('from-file-env'));
    const env = { AGENTBUS_KEYRING_FILE: fileEnv, AGENTBUS_KEYRING: hmacKeyring('from-json-env') };
    const kidOf = async (args: string[], e: NodeJS.ProcessEnv) => {
      const out = await agentbus(['--transport', 'memory:', ...args, 'publish', 'a.b', '{}', '--json'], e);
      expect(out.code, out.stderr).toBe(0);
      return (JSON.parse(out.stdout) as Envelope).headers?.['x-agentbus-sig-kid'];
    };
    const [a, b, c, d] = await Promise.all([
      kidOf(['--keyring', flag], env),
      kidOf([], env),
      kidOf([], { AGENTBUS_KEYRING: env.AGENTBUS_KEYRING }),
      kidOf([], { AGENTBUS_KEYRING_FILE: '', AGENTBUS_KEYRING: env.AGENTBUS_KEYRING }),
    ]);
    expect([a, b, c, d]).toEqual(['from-flag', 'from-file-env', 'from-json-env', 'from-json-env']);
    const unsigned = await kidOf([], {});
    expect(unsigned).toBeUndefined();
  });

  it('names the keyring file and the JSON path of a bad key, never its value (exit 2)', async () => {
    const secret = 'hunter2-the-raw-secret-value-0123456789';
    const cases: [string, string, RegExp][] = [
      [
        JSON.stringify({ active: 'k', keys: [{ kid: 'k', algorithm: 'hmac-sha256', secret }] }),
        secret,
        /keyring\.keys\[0\]\.secret: a key string must be PEM or say its encoding/,
      ],
      [
        JSON.stringify({
          keys: [
            { kid: 'k', algorithm: 'hmac-sha256', secret: `base64:${Buffer.from('short-secret').toString('base64')}` },
          ],
        }),
        Buffer.from('short-secret').toString('base64'),
        /keyring\.keys\[0\]\.secret: must be at least 32 bytes/,
      ],
      [`{"keys":[{"kid":"k","algorithm":"hmac-sha256","secret":"${secret}"}]`, secret, /keyring: is not valid JSON/],
      [
        JSON.stringify({
          keys: [
            {
              kid: 'k',
              algorithm: 'ed25519',
              privateKey: `-----BEGIN PRIVATE KEY-----\n${secret}\n-----END PRIVATE KEY-----\n`,
            },
          ],
        }),
        secret,
        /keyring\.keys\[0\]\.privateKey: is not a readable Ed25519 private key/,
      ],
    ];
    await Promise.all(
      cases.map(async ([text, shown, message], i) => {
        const path = file(`bad-${i}.json`, text);
        const viaFile = await agentbus(['--transport', 'memory:', '--keyring', path, 'publish', 'a.b', '{}']);
        expect(viaFile.code, viaFile.stderr).toBe(2);
        expect(viaFile.stdout).toBe('');
        expect(viaFile.stderr).toContain(`error: CONFIG: keyring file ${path} (--keyring): `);
        expect(viaFile.stderr).toMatch(message);
        neverShows(viaFile, shown);

        const viaEnv = await agentbus(['--transport', 'memory:', 'tail', 'a.>'], { AGENTBUS_KEYRING: text });
        expect(viaEnv.code, viaEnv.stderr).toBe(2);
        expect(viaEnv.stderr).toContain('error: CONFIG: keyring in $AGENTBUS_KEYRING: ');
        expect(viaEnv.stderr).toMatch(message);
        neverShows(viaEnv, shown);
      }),
    );
  });

  it('refuses a missing keyring file and a keyring without an active key for publish (exit 2)', async () => {
    const missing = join(dir, 'no-such-keyring.json');
    const gone = await agentbus(['--transport', 'memory:', 'publish', 'a.b', '{}'], { AGENTBUS_KEYRING_FILE: missing });
    expect(gone.code).toBe(2);
    expect(gone.stderr.trim()).toBe(`error: CONFIG: keyring file ${missing}: cannot read it (ENOENT)`);

    const verifyOnly = file('verify-only.json', hmacKeyring('v1', randomBytes(32), false));
    const pub = await agentbus(['--transport', 'memory:', '--keyring', verifyOnly, 'publish', 'a.b', '{}']);
    expect(pub.code).toBe(2);
    expect(pub.stderr).toMatch(/keyring\.active: no active key; publish needs one to sign with/);
  });

  it('warns when the keyring file is readable by group or others, and not when it is 0600', async () => {
    const open = file('open.json', hmacKeyring('o1'), 0o644);
    const closed = file('closed.json', hmacKeyring('c1'), 0o600);
    const [loose, tight] = await Promise.all([
      agentbus(['--transport', 'memory:', '--keyring', open, 'publish', 'a.b', '{}']),
      agentbus(['--transport', 'memory:', '--keyring', closed, 'publish', 'a.b', '{}']),
    ]);
    expect(loose.code, loose.stderr).toBe(0);
    expect(loose.stderr).toContain(
      `warning: keyring file ${open} is readable or writable by group or others (mode 0644); restrict it with: chmod 600 ${open}`,
    );
    expect(tight.code, tight.stderr).toBe(0);
    expect(tight.stderr).not.toContain('warning');
  });
});

const DENY_ALPHA = 'rules:\n  - deny:\n      patterns: ["alpha-forbidden"]\n';
const DENY_BETA = 'rules:\n  - deny:\n      patterns: ["beta-forbidden"]\n';

describe.concurrent('agentbus --verify-config', SLOW, () => {
  it('publish refuses a message a rule denies (exit 2) and sends what passes', async () => {
    const config = file('publish-rules.yaml', DENY_ALPHA);
    const [denied, passed] = await Promise.all([
      agentbus(['--transport', 'memory:', '--verify-config', config, 'publish', 'a.b', '{"text":"alpha-forbidden"}']),
      agentbus(['--transport', 'memory:', 'publish', 'a.b', '{"text":"fine"}'], { AGENTBUS_VERIFY_CONFIG: config }),
    ]);
    expect(denied.code).toBe(2);
    expect(denied.stdout).toBe('');
    expect(denied.stderr).toMatch(/^error: VALIDATION: verification rule 'deny' \(rules\[0\]\) rejected the message/);
    expect(passed.code, passed.stderr).toBe(0);
  });

  it('refuses an invalid config at start with the file and the rule path (exit 2)', async () => {
    const unknownRule = file('unknown-rule.yaml', 'rules:\n  - maxBytes: 100\n  - nosuchrule: 1\n');
    const badYaml = file('bad-yaml.yaml', 'rules:\n  - deny: [unclosed\n');
    const [a, b, c] = await Promise.all([
      agentbus(['--transport', 'memory:', '--verify-config', unknownRule, 'tail', 'a.>']),
      agentbus(['--transport', 'memory:', '--verify-config', badYaml, 'publish', 'a.b', '{}']),
      agentbus(['--transport', 'memory:', 'tail', 'a.>'], { AGENTBUS_VERIFY_CONFIG: join(dir, 'missing.yaml') }),
    ]);
    expect(a.code).toBe(2);
    expect(a.stderr).toMatch(
      new RegExp(`^error: CONFIG: verify config ${unknownRule}: rules\\[1\\]\\.nosuchrule: unknown rule`),
    );
    expect(b.code).toBe(2);
    expect(b.stderr).toMatch(new RegExp(`^error: CONFIG: verify config ${badYaml}: invalid YAML: .*line \\d+`));
    expect(c.code).toBe(2);
    expect(c.stderr.trim()).toBe(`error: CONFIG: verify config ${join(dir, 'missing.yaml')}: cannot read it (ENOENT)`);
  });

  it('tail reloads the rules when the file changes; a bad rewrite keeps the old rules and prints the error', async () => {
    const transport = sqliteUrl('reload');
    const config = file('tail-rules.yaml', DENY_ALPHA);
    const publish = async (text: string) => {
      const out = await agentbus(['--transport', transport, 'publish', 'chat.in', JSON.stringify({ text })]);
      expect(out.code, out.stderr).toBe(0);
      return out.stdout.trim();
    };
    const tail = new CliProcess(['--transport', transport, '--verify-config', config, 'tail', 'chat.>', '--json']);
    try {
      await tail.waitFor((p) => p.stderr.includes('tailing'), 'tail to subscribe');

      // Under the first rules, beta passes.
      const first = await publish('say beta-forbidden');
      await tail.waitFor((p) => p.stdout.includes(first), 'beta to pass the first rules');

      // An editor-style replace (write a copy, rename it over the file) loads the new rules.
      writeFileSync(`${config}.tmp`, DENY_BETA);
      renameSync(`${config}.tmp`, config);
      await tail.waitFor((p) => p.stderr.includes(`reloaded verify config ${config} (change): 1 rule: deny`), 'reload');
      const second = await publish('say beta-forbidden');
      await tail.waitFor((p) => p.stderr.includes(`refused ${second}`), 'beta to be refused by the new rules');
      expect(tail.stderr).toMatch(
        new RegExp(
          `refused ${second} on chat\\.in from agentbus-cli: VALIDATION \\(deny\\): verification rule 'deny' .*; dead-lettered with reason validation`,
        ),
      );

      // An invalid rewrite in place: the error is printed, the running rules stay.
      writeFileSync(config, 'rules:\n  - deny:\n      patterns: ["(a+)+"]\n');
      await tail.waitFor(
        (p) =>
          /error: CONFIG: verify config .*: rules\[0\]\.deny\.patterns\[0\]: .*; keeping the previous rules \(1 rule: deny\)/.test(
            p.stderr,
          ),
        'the bad config to be reported',
      );
      const third = await publish('say beta-forbidden again');
      await tail.waitFor((p) => p.stderr.includes(`refused ${third}`), 'beta still refused');
      const fourth = await publish('say alpha-forbidden');
      await tail.waitFor((p) => p.stdout.includes(fourth), 'alpha to pass (the first rules are gone)');
      expect(tail.stdout).not.toContain(second);
      expect(tail.stdout).not.toContain(third);
      expect(tail.child.exitCode).toBeNull();
    } finally {
      tail.child.kill('SIGINT');
    }
    const out = await tail.exit();
    expect(out.code).toBe(130);

    const dead = json<DeadLetterView[]>(
      await agentbus(['--transport', transport, 'dlq', 'list', '--reason', 'validation', '--json']),
    );
    expect(dead.map((d) => d.messageId)).toHaveLength(2);
  });

  it('tail reloads the rules on SIGHUP', async () => {
    const config = file('hup-rules.yaml', DENY_ALPHA);
    const tail = new CliProcess(['--transport', sqliteUrl('hup'), 'tail', 'x.>'], { AGENTBUS_VERIFY_CONFIG: config });
    await tail.waitFor((p) => p.stderr.includes('tailing'), 'tail to subscribe');
    // The text is unchanged, so only the signal reloads it.
    tail.child.kill('SIGHUP');
    await tail.waitFor((p) => p.stderr.includes(`reloaded verify config ${config} (SIGHUP): 1 rule: deny`), 'reload');
    tail.child.kill('SIGHUP');
    await tail.waitFor((p) => count(p.stderr, '(SIGHUP)') === 2, 'a second reload');
    tail.child.kill('SIGINT');
    const out = await tail.exit();
    expect(out.code).toBe(130);
    expect(out.stderr).not.toContain('error:');
  });
});

describe.concurrent('agentbus token', SLOW, () => {
  const claims = ['--issuer', 'https://issuer.example', '--audience', 'agentbus'];

  it('issues and verifies an HS256 token with a raw secret file (argument and stdin)', async () => {
    const secret = `${randomBytes(32).toString('hex')}`;
    const key = file('hs256.secret', `${secret}\n`);
    const issued = await agentbus([
      'token',
      'issue',
      '--key',
      key,
      '--alg',
      'HS256',
      ...claims,
      '--subject',
      'agent-7',
      '--roles',
      'planner,worker',
      '--tenant',
      'acme',
      '--ttl',
      '10m',
    ]);
    expect(issued.code, issued.stderr).toBe(0);
    expect(issued.stderr).toBe('');
    const token = issued.stdout.trim();
    expect(token).toMatch(/^[\w-]+\.[\w-]+\.[\w-]+$/);
    neverShows(issued, secret);

    const verify = ['token', 'verify', '--key', key, '--alg', 'HS256', ...claims];
    const byArgument = await agentbus([...verify, token]);
    expect(byArgument.code, byArgument.stderr).toBe(0);
    const identity = json<{ subject: string; roles: string[]; tenant: string; claims: Record<string, number> }>(
      byArgument,
    );
    expect(identity).toMatchObject({ subject: 'agent-7', roles: ['planner', 'worker'], tenant: 'acme' });
    expect((identity.claims.exp ?? 0) - (identity.claims.iat ?? 0)).toBe(600);

    const viaStdin = new CliProcess(verify);
    viaStdin.child.stdin?.end(`${token}\n`);
    const piped = await viaStdin.exit();
    expect(piped.code, piped.stderr).toBe(0);
    expect(JSON.parse(piped.stdout)).toEqual(identity);
  });

  it('issues with an Ed25519 private PEM and verifies with the public JWK', async () => {
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    const priv = file('ed.pem', privateKey.export({ format: 'pem', type: 'pkcs8' }));
    const pub = file('ed.jwk.json', JSON.stringify({ ...publicKey.export({ format: 'jwk' }), kid: 'ed-1' }), 0o644);
    const issued = await agentbus([
      'token',
      'issue',
      '--key',
      priv,
      '--alg',
      'EdDSA',
      '--kid',
      'ed-1',
      ...claims,
      '--subject',
      's',
    ]);
    expect(issued.code, issued.stderr).toBe(0);
    const verified = await agentbus([
      'token',
      'verify',
      issued.stdout.trim(),
      '--key',
      pub,
      '--alg',
      'EdDSA',
      ...claims,
    ]);
    expect(verified.code, verified.stderr).toBe(0);
    // A public key readable by all is fine: no warning.
    expect(verified.stderr).toBe('');
    expect(json(verified)).toMatchObject({ subject: 's', roles: [] });
  });

  it('exits 1 for a refused token, printing the code and the reason', async () => {
    const key = file('refuse.secret', randomBytes(32));
    const other = file('refuse-other.secret', randomBytes(32));
    const issued = await agentbus(['token', 'issue', '--key', key, '--alg', 'HS256', ...claims, '--subject', 's']);
    const token = issued.stdout.trim();
    const [audience, signature, garbage] = await Promise.all([
      agentbus([
        'token',
        'verify',
        token,
        '--key',
        key,
        '--alg',
        'HS256',
        '--issuer',
        'https://issuer.example',
        '--audience',
        'other',
      ]),
      agentbus(['token', 'verify', token, '--key', other, '--alg', 'HS256', ...claims]),
      agentbus(['token', 'verify', 'not-a-token', '--key', key, '--alg', 'HS256', ...claims]),
    ]);
    expect(audience.code).toBe(1);
    expect(audience.stdout).toBe('');
    expect(audience.stderr.trim()).toBe(
      'error: UNAUTHORIZED: token refused: audience not accepted (reason: audience, claim: aud)',
    );
    expect(signature.code).toBe(1);
    expect(signature.stderr.trim()).toBe(
      'error: UNAUTHORIZED: token refused: signature does not verify (reason: bad-signature)',
    );
    expect(garbage.code).toBe(1);
    expect(garbage.stderr).toMatch(/\(reason: malformed\)$/m);
  });

  it('exits 2 for bad usage or a bad key file, naming the file but never the key', async () => {
    const { privateKey } = generateKeyPairSync('ed25519');
    const pemText = privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
    const pem = file('confusion.pem', pemText);
    const shortSecret = 'too-short-secret';
    const short = file('short.secret', shortSecret, 0o644);
    const badJson = file('bad.jwk.json', `{"kty":"oct","k":"${shortSecret}"`);
    const base = [...claims, '--subject', 's'];
    const [confusion, tooShort, notJson, noKey, badAlg, badTtl, rawForRsa] = await Promise.all([
      agentbus(['token', 'issue', '--key', pem, '--alg', 'HS256', ...base]),
      agentbus(['token', 'issue', '--key', short, '--alg', 'HS256', ...base]),
      agentbus(['token', 'issue', '--key', badJson, '--alg', 'HS256', ...base]),
      agentbus(['token', 'issue', '--alg', 'HS256', ...base]),
      agentbus(['token', 'issue', '--key', short, '--alg', 'none', ...base]),
      agentbus(['token', 'issue', '--key', pem, '--alg', 'EdDSA', ...base, '--ttl', '2d']),
      agentbus(['token', 'issue', '--key', short, '--alg', 'RS256', ...base]),
    ]);
    for (const out of [confusion, tooShort, notJson, noKey, badAlg, badTtl, rawForRsa]) {
      expect(out.code, out.stderr).toBe(2);
      expect(out.stdout).toBe('');
      neverShows(out, shortSecret);
      expect(out.stderr).not.toContain('PRIVATE KEY');
    }
    expect(confusion.stderr.trim()).toBe(`error: CONFIG: key file ${pem}: a PEM key cannot be an HS256 secret`);
    expect(tooShort.stderr).toContain(`warning: key file ${short} is readable or writable by group or others`);
    expect(tooShort.stderr).toContain(`error: CONFIG: key file ${short}: an HS256 secret must be at least 32 bytes`);
    expect(notJson.stderr.trim()).toBe(
      `error: CONFIG: key file ${badJson}: looks like JSON but is not valid JSON (a JWK is expected)`,
    );
    expect(noKey.stderr).toMatch(/required option '--key <file>' not specified/);
    expect(badAlg.stderr).toMatch(/argument 'none' is invalid/);
    expect(badTtl.stderr.trim()).toBe('error: CONFIG: --ttl: must be at most maxTtlMs (86400000 ms)');
    expect(rawForRsa.stderr).toContain(`key file ${short}: RS256 needs a PEM or JWK key`);
  });
});
