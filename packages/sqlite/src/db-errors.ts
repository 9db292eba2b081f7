import { BusError, ConnectionError } from '@agentbus/core';

/** The SQLite result code of a better-sqlite3 error (`SQLITE_BUSY`, `SQLITE_FULL` …), if any. */
export function sqliteCode(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && code.startsWith('SQLITE_') ? code : undefined;
}

/**
 * Whether another connection held the lock past the busy timeout, so that trying again later may
 * succeed. Looks through the ConnectionError that {@link toBusError} wraps around it.
 */
export function isBusy(err: unknown): boolean {
  const code = sqliteCode(err) ?? (err instanceof BusError ? sqliteCode(err.cause) : undefined);
  return code !== undefined && (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED'));
}

/** Maps a database failure to a retryable ConnectionError; BusErrors pass through unchanged. */
export function toBusError(err: unknown, operation: string): BusError {
  if (err instanceof BusError) return err;
  const code = sqliteCode(err);
  const message = err instanceof Error ? err.message : String(err);
  return new ConnectionError(`sqlite ${operation} failed: ${message}`, {
    cause: err,
    ...(code === undefined ? {} : { data: { sqliteCode: code } }),
  });
}
