import type { Bus } from './bus.js';

/** What the bus stops and closes of its agents when it closes. */
interface AgentRuntime {
  /** Agents started and not yet stopped. */
  readonly agents: Set<{ stop(): Promise<void> }>;
  /** Directories not yet closed. */
  readonly directories: Set<{ close(): Promise<void> }>;
  /** The directory behind `bus.agents`, made on first use. */
  defaultDirectory: unknown;
}

const runtimes = new WeakMap<Bus, AgentRuntime>();

/** The agents and directories of `bus` (kept beside the bus, so that the Bus class stays small). */
export function agentRuntime(bus: Bus): AgentRuntime {
  let rt = runtimes.get(bus);
  if (!rt) {
    rt = { agents: new Set(), directories: new Set(), defaultDirectory: undefined };
    runtimes.set(bus, rt);
  }
  return rt;
}

/**
 * Stops every running agent of `bus` and closes its directories; `Bus.close()` calls it first.
 * Each agent's offline announcement is published before this returns its promise (before any
 * await), so it still goes out when the bus refuses publishes right after.
 */
export function closeAgents(bus: Bus): Promise<void> {
  const rt = runtimes.get(bus);
  if (!rt) return Promise.resolve();
  const pending = [...[...rt.agents].map((a) => a.stop()), ...[...rt.directories].map((d) => d.close())];
  return Promise.all(pending).then(() => undefined);
}
