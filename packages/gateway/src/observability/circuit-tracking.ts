import type { CircuitBreaker, CircuitState } from '@agentbus/core';

/** `agentbus_circuit_state` values. */
export const CIRCUIT_STATE_VALUE: Readonly<Record<CircuitState, number>> = Object.freeze({
  closed: 0,
  'half-open': 1,
  open: 2,
});

const tracked = new Map<string, CircuitBreaker>();

/**
 * Reports `breaker` as `agentbus_circuit_state{name}` (0 closed, 1 half-open, 2 open) on every
 * gateway's `/metrics` in this process, read at scrape time. Core's breakers have no listener
 * list (only the one `onStateChange` option), so they are registered here by name; a name
 * tracked again replaces the breaker. Returns the function that stops tracking it.
 *
 * Reading the state of an open breaker whose recovery time has passed turns it half-open (as any
 * reader of `breaker.state` does), which fires its `onStateChange`.
 */
export function trackCircuit(name: string, breaker: CircuitBreaker): () => void {
  tracked.set(name, breaker);
  return () => {
    if (tracked.get(name) === breaker) tracked.delete(name);
  };
}

/** The tracked breakers, by name. */
export function trackedCircuits(): ReadonlyMap<string, CircuitBreaker> {
  return tracked;
}
