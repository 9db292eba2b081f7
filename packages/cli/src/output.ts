/** Where a command writes; injected so commands stay testable and never touch `console`. */
export interface Output {
  /** Writes one line (a newline is added) to stdout. */
  line(text?: string): void;
  /** Writes one line to stderr: progress, hints and warnings, never data. */
  note(text: string): void;
  /** Styling for stdout; every function is the identity when colour is off. */
  readonly style: Style;
}

/** Text styling (bold, dim, colours) that degrades to plain text. */
export interface Style {
  readonly enabled: boolean;
  bold(text: string): string;
  dim(text: string): string;
  red(text: string): string;
  green(text: string): string;
  yellow(text: string): string;
  cyan(text: string): string;
  magenta(text: string): string;
}

const sgr =
  (open: number, close: number) =>
  (text: string): string =>
    `\u001b[${open}m${text}\u001b[${close}m`;
const same = (text: string): string => text;

/** ANSI styling when `enabled`, plain text otherwise. */
export function createStyle(enabled: boolean): Style {
  if (!enabled) {
    return { enabled, bold: same, dim: same, red: same, green: same, yellow: same, cyan: same, magenta: same };
  }
  return {
    enabled,
    bold: sgr(1, 22),
    dim: sgr(2, 22),
    red: sgr(31, 39),
    green: sgr(32, 39),
    yellow: sgr(33, 39),
    cyan: sgr(36, 39),
    magenta: sgr(35, 39),
  };
}

/**
 * Colour only for a terminal, and never when NO_COLOR is set or TERM is dumb
 * (https://no-color.org); FORCE_COLOR turns it on regardless.
 */
export function colourWanted(stream: { isTTY?: boolean }, env: NodeJS.ProcessEnv): boolean {
  if (env.FORCE_COLOR !== undefined && env.FORCE_COLOR !== '0') return true;
  if (env.NO_COLOR !== undefined && env.NO_COLOR !== '') return false;
  if (env.TERM === 'dumb') return false;
  return stream.isTTY === true;
}

let pipeGuarded = false;

/**
 * `agentbus tail | head -3`: once the reader is gone, stop quietly like other Unix tools
 * instead of crashing with an unhandled EPIPE error event.
 */
function guardClosedPipe(): void {
  if (pipeGuarded) return;
  pipeGuarded = true;
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EPIPE') process.exit(0);
      throw err;
    });
  }
}

/** The process's stdout/stderr as an Output. */
export function processOutput(env: NodeJS.ProcessEnv = process.env): Output {
  guardClosedPipe();
  return {
    line: (text = '') => process.stdout.write(`${text}\n`),
    note: (text) => process.stderr.write(`${text}\n`),
    style: createStyle(colourWanted(process.stdout, env)),
  };
}

/** Visible width, ignoring ANSI escapes, so styled cells still line up. */
function width(text: string): number {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: matching ANSI escapes is the point
  return text.replace(/\u001b\[[0-9;]*m/g, '').length;
}

/** Left-aligned columns separated by two spaces; `align` marks right-aligned (numeric) columns. */
export function renderTable(
  headers: readonly string[],
  rows: readonly (readonly string[])[],
  align: readonly ('left' | 'right')[] = [],
): string[] {
  const widths = headers.map((h, i) => Math.max(width(h), ...rows.map((r) => width(r[i] ?? ''))));
  const fmt = (cells: readonly string[]) =>
    cells
      .map((c, i) => {
        const pad = ' '.repeat(Math.max(0, (widths[i] ?? 0) - width(c)));
        return align[i] === 'right' ? pad + c : i === cells.length - 1 ? c : c + pad;
      })
      .join('  ');
  return [fmt(headers), ...rows.map(fmt)];
}

/** Shortens `text` to `max` characters with an ellipsis. */
export function truncate(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, Math.max(0, max - 1))}…`;
}
