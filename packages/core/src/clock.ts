import { uuidv7 } from './uuidv7.js';

/** Source of the current time in epoch milliseconds. Injected so TTLs and retries test deterministically. */
export interface Clock {
  now(): number;
}

export const systemClock: Clock = Object.freeze({ now: () => Date.now() });

/** A clock that only moves when told to. */
export class ManualClock implements Clock {
  #now: number;
  constructor(startMs = Date.UTC(2026, 0, 1)) {
    this.#now = startMs;
  }
  now(): number {
    return this.#now;
  }
  advance(ms: number): void {
    this.#now += ms;
  }
  set(ms: number): void {
    this.#now = ms;
  }
}

/** Produces unique, time-sortable ids. */
export type IdGenerator = () => string;

/** UUIDv7 ids: time-ordered, monotonic within a process. */
export const uuidv7Ids: IdGenerator = () => uuidv7();
