import {
  BusError,
  ConfigError,
  type Envelope,
  type Keyring,
  type Middleware,
  signer,
  verification,
  verifier,
} from '@agentbus/core';
import type { Command } from 'commander';
import type { Output } from '../output.js';
import { describeKeyringSource, keyringSourceOf, loadKeyring } from './keyring-source.js';
import { type LoadedVerifyConfig, loadVerifyConfig } from './verify-config.js';

/** What `--keyring` and `--verify-config` (or their environment variables) add to a command's bus. */
export interface CommandSecurity {
  /** Middleware for the bus, in the order to add it. */
  readonly middleware: readonly Middleware[];
  readonly keyring?: Keyring;
  readonly verifyConfig?: LoadedVerifyConfig;
}

/** The verification config path: `--verify-config`, else `$AGENTBUS_VERIFY_CONFIG` (empty counts as unset). */
function verifyConfigPathOf(command: Command): string | undefined {
  const path = command.optsWithGlobals<{ verifyConfig?: string }>().verifyConfig;
  if (path === '' && command.getOptionValueSourceWithGlobals('verifyConfig') === 'env') return undefined;
  return path;
}

/**
 * The security of `agentbus publish`: the verification rules first (a rejected message is not
 * sent; sanitizers rewrite what is), the signer last, so that it signs what is actually sent.
 * Everything is read and checked here, before the transport is opened.
 */
export async function publishSecurity(command: Command, out: Output): Promise<CommandSecurity> {
  const source = keyringSourceOf(command);
  const keyring = source === undefined ? undefined : await loadKeyring(source, out);
  if (source !== undefined && keyring?.active === undefined) {
    throw new ConfigError(
      `${describeKeyringSource(source)}: keyring.active: no active key; publish needs one to sign with`,
      { data: { path: 'keyring.active' } },
    );
  }
  const path = verifyConfigPathOf(command);
  const verifyConfig = path === undefined ? undefined : loadVerifyConfig(path);
  const middleware: Middleware[] = [];
  if (verifyConfig) middleware.push(verification(verifyConfig.pipeline, { onConsume: false }));
  if (keyring) middleware.push(signer({ keyring }));
  return { middleware, ...(keyring ? { keyring } : {}), ...(verifyConfig ? { verifyConfig } : {}) };
}

export interface TailSecurityOptions {
  /** How old a signature may be on first delivery (the verifier's `maxAgeMs`). */
  readonly maxAgeMs?: number;
}

/**
 * The security of `agentbus tail`: refusals reported on stderr (outermost, so it sees every
 * refusal), then the signature verifier (first to judge a message, so nothing acts on a forgery),
 * then the verification rules. A refused message never reaches the handler: the bus dead-letters
 * it with reason `signature`, `validation` or `payload-too-large`.
 */
export async function tailSecurity(
  command: Command,
  out: Output,
  options: TailSecurityOptions = {},
): Promise<CommandSecurity> {
  const source = keyringSourceOf(command);
  const keyring = source === undefined ? undefined : await loadKeyring(source, out);
  const path = verifyConfigPathOf(command);
  const verifyConfig = path === undefined ? undefined : loadVerifyConfig(path);
  const middleware: Middleware[] = [];
  if (keyring || verifyConfig) middleware.push(reportRefusals(out));
  if (keyring) {
    middleware.push(verifier({ keyring, ...(options.maxAgeMs === undefined ? {} : { maxAgeMs: options.maxAgeMs }) }));
  }
  if (verifyConfig) middleware.push(verification(verifyConfig.pipeline, { onPublish: false }));
  return { middleware, ...(keyring ? { keyring } : {}), ...(verifyConfig ? { verifyConfig } : {}) };
}

/** The dead-letter reason the bus gives each refusal (the error code, lower-case and dashed). */
const REFUSALS: Readonly<Record<string, string>> = Object.freeze({
  SIGNATURE: 'signature',
  VALIDATION: 'validation',
  PAYLOAD_TOO_LARGE: 'payload-too-large',
});

/** One stderr line for a refused message: which, why (code, check or rule, message) and where it went. */
export function refusalLine(envelope: Envelope, err: BusError): string {
  const data = (err.data ?? {}) as { check?: unknown; rule?: unknown };
  const detail = typeof data.check === 'string' ? data.check : typeof data.rule === 'string' ? data.rule : undefined;
  const message = err.message.replace(/\s*\n\s*/g, ' ');
  return (
    `refused ${envelope.id} on ${envelope.topic} from ${envelope.source}: ` +
    `${err.code}${detail === undefined ? '' : ` (${detail})`}: ${message}; dead-lettered with reason ${REFUSALS[err.code]}`
  );
}

/** Reports each message the security middleware after it refuses, then lets the refusal go on to the bus. */
export function reportRefusals(out: Output): Middleware {
  return {
    name: 'report-refusals',
    async consume(ctx, next) {
      try {
        await next();
      } catch (err) {
        if (err instanceof BusError && !err.retryable && Object.hasOwn(REFUSALS, err.code)) {
          out.note(refusalLine(ctx.envelope, err));
        }
        throw err;
      }
    },
  };
}
