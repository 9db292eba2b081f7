import { BusError, ConnectionError } from '@agentbus/core';

/** Server replies that mean "not now" rather than "never": loading, failover, cluster resharding. */
const TRANSIENT_REPLY = /^(LOADING|BUSY|TRYAGAIN|CLUSTERDOWN|MASTERDOWN|READONLY|MOVED|ASK)\b/;

/**
 * Maps a client failure to a BusError: lost connections and transient server states become a
 * retryable ConnectionError; other error replies (a bug, a wrong key type) a non-retryable
 * BusError. BusErrors pass through unchanged.
 */
export function toBusError(err: unknown, operation: string): BusError {
  if (err instanceof BusError) return err;
  const message = err instanceof Error ? err.message : String(err);
  const isReply = (err as { name?: unknown } | null)?.name === 'ReplyError';
  if (isReply && !TRANSIENT_REPLY.test(message)) {
    return new BusError(`redis ${operation} failed: ${message}`, { cause: err });
  }
  return new ConnectionError(`redis ${operation} failed: ${message}`, { cause: err });
}
