import { ExitCode } from './cli-error.js';

type Closer = () => Promise<void> | void;

/** The part of `process` the lifecycle needs; injectable for tests. */
export interface SignalSource {
  once(signal: NodeJS.Signals, listener: () => void): unknown;
  off(signal: NodeJS.Signals, listener: () => void): unknown;
}

const SIGNALS = Object.freeze({ SIGINT: ExitCode.sigint, SIGTERM: ExitCode.sigterm } as const);

/**
 * Graceful shutdown for one CLI run. Commands register what they opened (a bus, a transport)
 * with `defer`; on SIGINT/SIGTERM the `signal` aborts so long-running commands return, and
 * everything registered is closed once, newest first. A second signal is not caught, so the
 * default handler kills the process: the escape hatch when a close hangs.
 */
export class Lifecycle {
  readonly #abort = new AbortController();
  readonly #closers: Closer[] = [];
  readonly #listeners = new Map<NodeJS.Signals, () => void>();
  #exitCode: number | undefined;
  #closing: Promise<void> | undefined;

  constructor(private readonly source?: SignalSource) {
    if (!source) return;
    for (const [name, code] of Object.entries(SIGNALS) as [NodeJS.Signals, number][]) {
      const listener = () => {
        this.#exitCode ??= code;
        this.#abort.abort(new Error(`received ${name}`));
      };
      this.#listeners.set(name, listener);
      source.once(name, listener);
    }
  }

  /** Aborted when the user asks the process to stop. */
  get signal(): AbortSignal {
    return this.#abort.signal;
  }

  /** 130 / 143 after SIGINT / SIGTERM, otherwise undefined. */
  get signalExitCode(): number | undefined {
    return this.#exitCode;
  }

  /** Registers something to close when the run ends, normally or by signal. */
  defer(close: Closer): void {
    this.#closers.push(close);
  }

  /** Closes everything registered (newest first) and removes the signal listeners. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      let first: unknown;
      for (const close of this.#closers.splice(0).reverse()) {
        try {
          await close();
        } catch (err) {
          first ??= err;
        }
      }
      for (const [name, listener] of this.#listeners) this.source?.off(name, listener);
      if (first !== undefined) throw first;
    })();
    return this.#closing;
  }
}

/** Resolves when `signal` aborts (immediately if it already has). */
export function aborted(signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
}
