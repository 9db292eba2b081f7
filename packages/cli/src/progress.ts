import { MultiBar, Presets, type SingleBar } from 'cli-progress';

/** A progress bar on stderr, or nothing at all: commands call it the same way either way. */
export interface Progress {
  /** True when a bar is drawn (notes must then go through {@link Progress.note}). */
  readonly active: boolean;
  /** Counts `n` more steps done; `label` replaces the text beside the bar. */
  advance(n?: number, label?: string): void;
  /** Changes the number of steps (e.g. when an estimate turns out short). */
  setTotal(total: number): void;
  /** Writes a line above the bar without tearing it. */
  note(text: string): void;
  /** Removes the bar. Idempotent. */
  stop(): void;
}

/** Where a bar may be drawn: a terminal, and not when the output is for machines. */
export interface ProgressTarget {
  readonly isTTY?: boolean;
  readonly columns?: number;
  write(chunk: string): boolean;
}

/**
 * Whether a command should draw a bar: stderr is a terminal, `--json` was not asked for, and
 * neither CI nor a dumb terminal is in the way. Tests' output never shows a bar: their stderr
 * is a pipe.
 */
export function progressWanted(
  json: boolean | undefined,
  stream: { isTTY?: boolean } = process.stderr,
  env: NodeJS.ProcessEnv = process.env,
): boolean {
  if (json || stream.isTTY !== true) return false;
  if (env.TERM === 'dumb' || (env.CI !== undefined && env.CI !== '' && env.CI !== 'false')) return false;
  return true;
}

const NO_PROGRESS: Progress = Object.freeze({
  active: false,
  advance: () => {},
  setTotal: () => {},
  note: () => {},
  stop: () => {},
});

/** Options of {@link startProgress}. */
export interface ProgressOptions {
  /** Whether to draw at all (see {@link progressWanted}). */
  readonly enabled: boolean;
  readonly total: number;
  /** What is counted, e.g. `dead letters`, `phases`. */
  readonly unit: string;
  readonly label?: string;
  /** Where the bar is drawn; stderr by default. */
  readonly stream?: ProgressTarget;
  /** Used when disabled: where notes go (usually `out.note`). */
  readonly fallbackNote?: (text: string) => void;
}

/**
 * Starts a progress bar (cli-progress) on stderr, or a silent stand-in when not `enabled`, so
 * callers never branch. Notes written through the bar appear above it.
 */
export function startProgress(options: ProgressOptions): Progress {
  if (!options.enabled) {
    const note = options.fallbackNote;
    return note ? { ...NO_PROGRESS, note } : NO_PROGRESS;
  }
  const stream = options.stream ?? process.stderr;
  const multi = new MultiBar(
    {
      stream: stream as NodeJS.WritableStream,
      format: `{bar} {value}/{total} ${options.unit} | {duration_formatted} | {label}`,
      hideCursor: true,
      clearOnComplete: true,
      stopOnComplete: false,
      etaBuffer: 20,
      fps: 10,
    },
    Presets.shades_classic,
  );
  const bar: SingleBar = multi.create(Math.max(1, options.total), 0, { label: options.label ?? '' });
  let stopped = false;
  return {
    active: true,
    advance(n = 1, label) {
      if (stopped) return;
      bar.increment(n, label === undefined ? {} : { label });
    },
    setTotal(total) {
      if (!stopped) bar.setTotal(Math.max(1, total));
    },
    note(text) {
      if (!stopped) multi.log(`${text}\n`);
      else stream.write(`${text}\n`);
    },
    stop() {
      if (stopped) return;
      stopped = true;
      multi.stop();
    },
  };
}
