/** The logging interface agentbus writes to; pino loggers fit it as they are. */
export interface Logger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

const noop = () => {};

/** Drops everything. */
export const silentLogger: Logger = Object.freeze({ debug: noop, info: noop, warn: noop, error: noop });

/** Writes warnings and errors as JSON lines to stderr; the default, so that nothing is swallowed. */
export const stderrLogger: Logger = Object.freeze({
  debug: noop,
  info: noop,
  warn: (obj: object, msg?: string) => write('warn', obj, msg),
  error: (obj: object, msg?: string) => write('error', obj, msg),
});

function write(level: string, obj: object, msg?: string): void {
  const err = (obj as { err?: unknown }).err;
  const fields = err instanceof Error ? { ...obj, err: { message: err.message, name: err.name } } : obj;
  process.stderr.write(`${JSON.stringify({ level, time: Date.now(), msg, ...fields })}\n`);
}
