import { type Bus, type BusOptions, createBus, type Transport } from '@agentbus/core';
import type { Command } from 'commander';
import type { Lifecycle } from './lifecycle.js';
import { openTransport } from './open-transport.js';
import type { Output } from './output.js';

/** What every command receives besides its own options. */
export interface CliContext {
  readonly out: Output;
  readonly lifecycle: Lifecycle;
}

/** The options every command inherits from the root program. */
export interface GlobalOptions {
  readonly transport: string;
  /** `--keyring <file>` or `$AGENTBUS_KEYRING_FILE`; see security/keyring-source.ts. */
  readonly keyring?: string;
  /** `--verify-config <file>` or `$AGENTBUS_VERIFY_CONFIG`. */
  readonly verifyConfig?: string;
}

/** The transport URL after flag, env and default were merged by commander. */
export function transportUrlOf(command: Command): string {
  return command.optsWithGlobals<GlobalOptions>().transport;
}

/**
 * Opens and connects the transport a URL names, closing it when the run ends. (The SQLite
 * transport creates the database's directory, so the default `./.agentbus/bus.db` works in a
 * fresh checkout.)
 */
export async function connectTransport(ctx: CliContext, url: string): Promise<Transport> {
  const transport = openTransport(url);
  ctx.lifecycle.defer(() => transport.close());
  await transport.connect();
  return transport;
}

/** A bus over a freshly connected transport, closed (draining handlers) when the run ends. */
export async function connectBus(
  ctx: CliContext,
  url: string,
  options: Omit<BusOptions, 'transport'> = {},
): Promise<Bus> {
  const transport = await connectTransport(ctx, url);
  const bus = createBus({ ...options, transport });
  // Registered after the transport, so it closes first: handlers drain, then the transport shuts.
  ctx.lifecycle.defer(() => bus.close());
  return bus;
}
