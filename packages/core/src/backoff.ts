import { ConfigError } from './errors.js';

export interface BackoffOptions {
  /** Delay before the second attempt. */
  readonly initialDelayMs: number;
  readonly factor: number;
  readonly maxDelayMs: number;
  /** `full`: uniform in [0, d]; `equal`: uniform in [d/2, d]; `none`: d. */
  readonly jitter: 'full' | 'equal' | 'none';
}

export const BACKOFF_DEFAULTS: BackoffOptions = Object.freeze({
  initialDelayMs: 200,
  factor: 2,
  maxDelayMs: 30_000,
  jitter: 'equal',
});

export function validateBackoff(b: BackoffOptions, path: string): void {
  if (!(b.initialDelayMs >= 0)) throw new ConfigError('must be >= 0', { path: `${path}.initialDelayMs` });
  if (!(b.factor >= 1)) throw new ConfigError('must be >= 1', { path: `${path}.factor` });
  if (!(b.maxDelayMs >= b.initialDelayMs))
    throw new ConfigError('must be >= initialDelayMs', { path: `${path}.maxDelayMs` });
  if (!['full', 'equal', 'none'].includes(b.jitter))
    throw new ConfigError("must be 'full', 'equal' or 'none'", { path: `${path}.jitter` });
}

/** The delay before redelivering after failed attempt number `attempt` (1-based). */
export function backoffDelayMs(attempt: number, b: BackoffOptions, random: () => number = Math.random): number {
  const d = Math.min(b.maxDelayMs, b.initialDelayMs * b.factor ** Math.max(0, attempt - 1));
  if (b.jitter === 'none') return Math.round(d);
  if (b.jitter === 'full') return Math.round(random() * d);
  return Math.round(d / 2 + (random() * d) / 2);
}
