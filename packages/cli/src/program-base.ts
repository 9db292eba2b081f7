import { Command, Option } from 'commander';
import { DEFAULT_TRANSPORT_URL, SUPPORTED_TRANSPORT_URLS } from './open-transport.js';

/** The environment variable the CLI reads the transport URL from when `--transport` is absent. */
export const TRANSPORT_ENV = 'AGENTBUS_TRANSPORT';

/** The `--transport <url>` option shared by the CLI and the standalone bench runner. */
export function transportOption(defaultUrl: string = DEFAULT_TRANSPORT_URL): Option {
  return new Option('--transport <url>', `bus transport: ${SUPPORTED_TRANSPORT_URLS.join(', ')}`)
    .env(TRANSPORT_ENV)
    .default(defaultUrl);
}

/**
 * A root command with what every agentbus program shares: errors are thrown rather than
 * exiting the process (so the bus is closed and the exit code chosen in one place), and a
 * failed parse points at --help. Subcommands inherit these settings when created with
 * `.command()`.
 */
export function baseProgram(name: string): Command {
  return new Command(name).exitOverride().showHelpAfterError('(add --help for usage)').showSuggestionAfterError();
}
