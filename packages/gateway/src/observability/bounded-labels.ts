/**
 * Keeps a label's distinct values bounded: the first `max` values seen are used as they are,
 * every later one becomes `other`. Prometheus keeps a series per label value for the life of
 * the process, so an unbounded label (topics named per user, inbox topics) is a memory leak.
 */
export class BoundedLabels {
  readonly #seen = new Set<string>();
  readonly #max: number;
  readonly #other: string;

  constructor(max: number, other = 'other') {
    this.#max = max;
    this.#other = other;
  }

  /** `value`, or `other` once `max` distinct values were taken. */
  value(value: string): string {
    if (this.#seen.has(value)) return value;
    if (this.#seen.size >= this.#max) return this.#other;
    this.#seen.add(value);
    return value;
  }

  /** Distinct values taken so far. */
  get size(): number {
    return this.#seen.size;
  }
}
