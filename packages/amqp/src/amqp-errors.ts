import { BusError, ConfigError, ConnectionError } from '@agentbus/core';

/** AMQP reply codes that mean the declaration does not fit what exists (a configuration problem). */
const CONFIG_CODES = new Set([403, 404, 406, 530]);

/**
 * Maps a client failure to a BusError: a lost connection or channel becomes a retryable
 * ConnectionError; a refused declaration (a queue that exists with other arguments, access
 * refused) a ConfigError. BusErrors pass through unchanged.
 */
export function toBusError(err: unknown, operation: string): BusError {
  if (err instanceof BusError) return err;
  const message = err instanceof Error ? err.message : String(err);
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'number' && CONFIG_CODES.has(code)) {
    return new ConfigError(`amqp ${operation} refused by the broker: ${message}`, { cause: err });
  }
  return new ConnectionError(`amqp ${operation} failed: ${message}`, { cause: err });
}
