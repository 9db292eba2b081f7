import {
  ConfigError,
  createJwtIssuer,
  createJwtVerifier,
  type Identity,
  type JwtAlgorithm,
  UnauthorizedError,
} from '@agentbus/core';
import { type Command, Option } from 'commander';
import { commaList, duration, readStdin } from '../arguments.js';
import { UsageError } from '../cli-error.js';
import type { CliContext } from '../context.js';
import { JWT_ALGORITHMS, jwtConfigError, readJwtKeyFile } from '../security/jwt-key-file.js';

interface KeyFlags {
  readonly key: string;
  readonly alg: JwtAlgorithm;
  readonly kid?: string;
  readonly audience: string[];
}

interface IssueFlags extends KeyFlags {
  readonly issuer: string;
  readonly subject: string;
  readonly roles?: string[];
  readonly tenant?: string;
  readonly ttl?: number;
}

interface VerifyFlags extends KeyFlags {
  readonly issuer: string[];
}

/** Repeatable option values, in order. */
function repeatable(value: string, previous: readonly string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

/** Option names of createJwtIssuer/createJwtVerifier as the flags that set them. */
const FLAGS = Object.freeze({
  alg: '--alg',
  kid: '--kid',
  issuer: '--issuer',
  audience: '--audience',
  'issue.subject': '--subject',
  'issue.roles': '--roles',
  'issue.tenant': '--tenant',
  'issue.ttlMs': '--ttl',
  defaultTtlMs: '--ttl',
});

function withKeyFlags(command: Command, verb: 'sign' | 'verify'): Command {
  return command
    .requiredOption(
      '--key <file>',
      verb === 'sign'
        ? 'signing key file: PEM or JWK (private key), or the raw secret for HS* (a trailing newline is dropped)'
        : 'verification key file: PEM or JWK (public key), or the raw secret for HS* (a trailing newline is dropped)',
    )
    .addOption(new Option('--alg <alg>', 'signature algorithm, pinned').choices(JWT_ALGORITHMS).makeOptionMandatory())
    .option('--kid <kid>', "key id (default: the JWK's kid, if any)");
}

function configErrorFor(err: unknown, keyFile: string): unknown {
  return err instanceof ConfigError ? jwtConfigError(err, keyFile, FLAGS) : err;
}

/** The token from the argument, or from stdin when it is absent or `-`. */
async function tokenFrom(argument: string | undefined): Promise<string> {
  if (argument !== undefined && argument !== '-') return argument.trim();
  if (process.stdin.isTTY) throw new UsageError('token verify: give the token as an argument or pipe it on stdin');
  const token = (await readStdin()).trim();
  if (token === '') throw new UsageError('token verify: no token on stdin');
  return token;
}

/** `agentbus token issue|verify`: JSON Web Tokens for agents and gateway clients, keys from files only. */
export function registerTokenCommand(program: Command, ctx: CliContext): void {
  const token = program
    .command('token')
    .description('issue and verify JSON Web Tokens (keys from files only; never printed)')
    .addHelpText(
      'after',
      '\nExit codes: 0 ok; 1 token refused (stderr: error: UNAUTHORIZED: … (reason: …)); 2 bad usage or key file.',
    );

  withKeyFlags(token.command('issue').description('sign a token for an identity and print it'), 'sign')
    .requiredOption('--issuer <iss>', 'the iss claim')
    .requiredOption('--audience <aud>', 'the aud claim; repeat for more', repeatable)
    .requiredOption('--subject <sub>', 'the sub claim: who the token speaks for')
    .option('--roles <a,b>', 'roles claim, comma-separated; repeat for more', commaList)
    .option('--tenant <tenant>', 'tenant claim')
    .option('--ttl <duration>', 'lifetime, e.g. 90s, 15m, 2h (default 15m, at most 24h)', duration)
    .action(async (flags: IssueFlags) => {
      const file = await readJwtKeyFile(flags.key, flags.alg, ctx.out);
      const kid = flags.kid ?? file.kid;
      let jwt: string;
      try {
        const issuer = createJwtIssuer({
          key: file.key,
          alg: flags.alg,
          issuer: flags.issuer,
          audience: flags.audience,
          ...(kid === undefined ? {} : { kid }),
        });
        jwt = await issuer.issue(
          {
            subject: flags.subject,
            ...(flags.roles === undefined ? {} : { roles: flags.roles }),
            ...(flags.tenant === undefined ? {} : { tenant: flags.tenant }),
          },
          flags.ttl === undefined ? {} : { ttlMs: flags.ttl },
        );
      } catch (err) {
        throw configErrorFor(err, flags.key);
      }
      ctx.out.line(jwt);
    });

  withKeyFlags(
    token
      .command('verify')
      .description(
        'verify a token and print its identity as JSON; exit 1 when refused, with the reason (expired, audience …)',
      )
      .argument('[token]', "the token; absent or '-': read it from stdin"),
    'verify',
  )
    .requiredOption('--issuer <iss>', 'accepted iss; repeat for more', repeatable)
    .requiredOption('--audience <aud>', 'accepted aud (one match suffices); repeat for more', repeatable)
    .action(async (argument: string | undefined, flags: VerifyFlags) => {
      const file = await readJwtKeyFile(flags.key, flags.alg, ctx.out);
      const kid = flags.kid ?? file.kid;
      let verify: (token: string) => Promise<Identity>;
      try {
        ({ verify } = createJwtVerifier({
          keys: [{ key: file.key, alg: flags.alg, ...(kid === undefined ? {} : { kid }) }],
          issuer: flags.issuer,
          audience: flags.audience,
        }));
      } catch (err) {
        throw configErrorFor(err, flags.key);
      }
      const jwt = await tokenFrom(argument);
      let identity: Identity;
      try {
        identity = await verify(jwt);
      } catch (err) {
        if (!(err instanceof UnauthorizedError)) throw err;
        const { reason, claim } = (err.data ?? {}) as { reason?: unknown; claim?: unknown };
        const detail = [`reason: ${String(reason)}`, ...(typeof claim === 'string' ? [`claim: ${claim}`] : [])];
        throw new UnauthorizedError(`${err.message} (${detail.join(', ')})`, { data: err.data });
      }
      ctx.out.line(JSON.stringify(identity));
    });
}
