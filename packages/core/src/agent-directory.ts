import { AGENT_DISCOVER_TYPE, type AgentCard, AgentTopics, parseAgentPresence } from './agent-card.js';
import { agentRuntime } from './agent-runtime.js';
import type { Bus, BusSubscription } from './bus.js';
import type { Delivery } from './delivery.js';
import { topicMatches } from './envelope.js';
import { ClosedError, TimeoutError } from './errors.js';
import { positiveInteger } from './validate.js';

/** An agent the directory sees alive. */
export interface AgentInfo {
  readonly id: string;
  /** The card of its most recently heard running copy. */
  readonly card: AgentCard;
  /** Running copies (instances) of the agent alive now; 0 in a `leave` change. */
  readonly instances: number;
  /** When the directory last heard from it, on the bus clock (epoch ms). */
  readonly lastSeenMs: number;
}

export type AgentChangeType = 'join' | 'update' | 'leave';

/** What changed in the directory. */
export interface AgentChange {
  /** `join`: now alive; `update`: its card or its number of instances changed; `leave`: gone. */
  readonly type: AgentChangeType;
  readonly agent: AgentInfo;
  /** Of a `leave`: `offline` (it said so when it stopped) or `timeout` (no heartbeat in time). */
  readonly reason?: 'offline' | 'timeout';
}

/** Which agents `list` returns; every field given must match. */
export interface AgentFilter {
  /** Has a skill with this id. */
  readonly skill?: string;
  /** Has a skill with this tag. */
  readonly tag?: string;
  /** Serves this topic: one of its card's topic patterns matches it (or equals it). */
  readonly topic?: string;
}

export interface AgentDirectoryOptions {
  /**
   * How long an agent stays listed without a heartbeat. Default: what each agent announces
   * (3 × its heartbeat unless it says otherwise), so agents with slow heartbeats are not dropped.
   */
  readonly heartbeatTimeoutMs?: number;
  /** How often silent agents are looked for, so that `leave` comes without a `list()`. */
  readonly sweepIntervalMs?: number;
  /** On start, ask running agents to announce themselves at once instead of at their next heartbeat. */
  readonly discover?: boolean;
}

export const AGENT_DIRECTORY_DEFAULTS = Object.freeze({ sweepIntervalMs: 1_000, discover: true });

export interface WaitForAgentOptions {
  /** Default 30 s; then TimeoutError. */
  readonly timeoutMs?: number;
  readonly signal?: AbortSignal;
}

interface InstanceState {
  card: AgentCard;
  seq: number;
  lastSeenMs: number;
  timeoutMs: number;
  online: boolean;
}

interface Entry {
  /** Alive as last reported to listeners. */
  alive: boolean;
  /** What was last reported (to tell an update). */
  reported: string;
  /** The card last received. */
  card: AgentCard;
  readonly instances: Map<string, InstanceState>;
}

interface Sink {
  push(change: AgentChange): void;
  end(): void;
}

/**
 * Who is alive in the workspace. Listens to `agents.presence` with an ephemeral group of its own
 * (every directory sees every card) and keeps each agent's card with when it was last heard, on
 * the bus clock. An agent that stops (announces `offline`) leaves at once; one that dies leaves
 * once its heartbeat timeout passes without a heartbeat. Several running copies of one agent id
 * (they share its inbox) count as one agent with several `instances`; it leaves when the last goes.
 *
 * On start the directory asks running agents to announce themselves (`agents.discover`), so it
 * knows them within a round trip; an agent that does not answer (`discoverable: false`, an older
 * version) shows up at its next heartbeat. `list` and `get` start the directory if needed, so the
 * first `list()` may come before the answers: use `waitFor(id)` or `changes()` to wait for agents.
 */
export class AgentDirectory implements AsyncDisposable {
  readonly #bus: Bus;
  readonly #timeoutMs: number | undefined;
  readonly #sweepIntervalMs: number;
  readonly #discover: boolean;
  readonly #agents = new Map<string, Entry>();
  readonly #listeners = new Set<{ type: AgentChangeType; fn: (change: AgentChange) => void }>();
  readonly #sinks = new Set<Sink>();
  #starting: Promise<void> | undefined;
  #sub: BusSubscription | undefined;
  #timer: NodeJS.Timeout | undefined;
  #closing: Promise<void> | undefined;

  /** The directory behind `bus.agents`: one per bus, made on first use, closed with the bus. */
  static of(bus: Bus): AgentDirectory {
    const rt = agentRuntime(bus);
    rt.defaultDirectory ??= new AgentDirectory(bus);
    return rt.defaultDirectory as AgentDirectory;
  }

  /** A directory of its own (e.g. with other options); it is closed with the bus. */
  constructor(bus: Bus, options: AgentDirectoryOptions = {}) {
    this.#bus = bus;
    this.#timeoutMs =
      options.heartbeatTimeoutMs === undefined
        ? undefined
        : positiveInteger(options.heartbeatTimeoutMs, 'agents.heartbeatTimeoutMs');
    this.#sweepIntervalMs = positiveInteger(
      options.sweepIntervalMs ?? AGENT_DIRECTORY_DEFAULTS.sweepIntervalMs,
      'agents.sweepIntervalMs',
    );
    this.#discover = options.discover ?? AGENT_DIRECTORY_DEFAULTS.discover;
    agentRuntime(bus).directories.add(this);
  }

  /** Starts listening (idempotent); `list`, `get`, `waitFor` and `changes` call it. */
  start(): Promise<void> {
    if (this.#closing) return Promise.reject(new ClosedError('agent directory is closed'));
    if (!this.#starting) {
      const starting = this.#open();
      this.#starting = starting;
      starting.catch(() => {
        if (this.#starting === starting) this.#starting = undefined; // the next call tries again
      });
    }
    return this.#starting;
  }

  async #open(): Promise<void> {
    const group = `_agents.directory.${this.#bus.ids().replaceAll('.', '-')}`;
    const sub = await this.#bus.subscribe(AgentTopics.presence, (d) => this.#onPresence(d), {
      group,
      // Every directory must see every card, and none should outlive its process.
      ephemeral: true,
      concurrency: 1,
      prefetch: 256,
      maxAttempts: 1,
    });
    if (this.#closing) {
      await sub.close();
      throw new ClosedError('agent directory is closed');
    }
    this.#sub = sub;
    this.#timer = setInterval(() => this.#sweep(), this.#sweepIntervalMs);
    this.#timer.unref();
    if (this.#discover) {
      await this.#bus
        .publish(AgentTopics.discover, { directory: group }, { type: AGENT_DISCOVER_TYPE })
        .catch((err) => {
          // Not fatal: the agents still show up at their next heartbeat.
          this.#bus.logger.warn({ err }, 'agent directory: discover request failed');
        });
    }
  }

  /** The agents alive now, sorted by id, optionally filtered by skill, tag or topic served. */
  async list(filter: AgentFilter = {}): Promise<AgentInfo[]> {
    await this.start();
    this.#sweep();
    return this.#alive().filter((a) => matches(a.card, filter));
  }

  /** The agent with this id if it is alive. */
  async get(id: string): Promise<AgentInfo | undefined> {
    await this.start();
    this.#sweep();
    const entry = this.#agents.get(id);
    return entry?.alive ? this.#info(id, entry, this.#bus.clock.now()) : undefined;
  }

  /** Resolves with the agent once it is alive (at once if it is); TimeoutError after `timeoutMs`. */
  async waitFor(id: string, options: WaitForAgentOptions = {}): Promise<AgentInfo> {
    const timeoutMs = positiveInteger(options.timeoutMs ?? 30_000, 'waitFor.timeoutMs');
    options.signal?.throwIfAborted();
    const now = await this.get(id);
    if (now) return now;
    return new Promise<AgentInfo>((resolve, reject) => {
      const sink: Sink = {
        push: (c) => {
          if (c.type !== 'leave' && c.agent.id === id) done(() => resolve(c.agent));
        },
        end: () => done(() => reject(new ClosedError('agent directory is closed'))),
      };
      const onAbort = () => done(() => reject(options.signal?.reason));
      const timer = setTimeout(
        () => done(() => reject(new TimeoutError(`agent ${id} did not come online within ${timeoutMs} ms`))),
        timeoutMs,
      );
      const done = (settle: () => void) => {
        clearTimeout(timer);
        options.signal?.removeEventListener('abort', onAbort);
        this.#sinks.delete(sink);
        settle();
      };
      options.signal?.addEventListener('abort', onAbort, { once: true });
      this.#sinks.add(sink);
      // It may have joined while the listener was being set up.
      const entry = this.#agents.get(id);
      if (entry?.alive) done(() => resolve(this.#info(id, entry, this.#bus.clock.now())));
    });
  }

  /**
   * Calls `listener` for every change of this type; returns a function that removes it. Does not
   * start the directory: call `start()` (or `list()`). A throwing listener is logged.
   */
  on(type: AgentChangeType, listener: (change: AgentChange) => void): () => void {
    const l = { type, fn: listener };
    this.#listeners.add(l);
    return () => this.#listeners.delete(l);
  }

  /**
   * The changes from now on, starting with a `join` for every agent alive now; ends when the
   * directory closes or `signal` aborts. Starts the directory.
   */
  async *changes(options: { readonly signal?: AbortSignal } = {}): AsyncGenerator<AgentChange> {
    const { signal } = options;
    await this.start();
    this.#sweep();
    const queue: AgentChange[] = this.#alive().map((agent) => ({ type: 'join', agent }));
    let ended = false;
    let wake: (() => void) | undefined;
    const sink: Sink = {
      push: (c) => {
        queue.push(c);
        wake?.();
      },
      end: () => {
        ended = true;
        wake?.();
      },
    };
    const onAbort = () => sink.end();
    this.#sinks.add(sink);
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      while (!signal?.aborted) {
        const next = queue.shift();
        if (next) yield next;
        else if (ended || this.#closing) return;
        else {
          await new Promise<void>((r) => {
            wake = r;
          });
          wake = undefined;
        }
      }
    } finally {
      this.#sinks.delete(sink);
      signal?.removeEventListener('abort', onAbort);
    }
  }

  /** Stops listening; open `changes()` iterators end, `waitFor` calls reject with ClosedError. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      clearInterval(this.#timer);
      for (const s of [...this.#sinks]) s.end();
      agentRuntime(this.#bus).directories.delete(this);
      await this.#starting?.catch(() => undefined);
      await this.#sub?.close();
    })();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #onPresence(d: Delivery): void {
    // A malformed announcement throws ValidationError: it is dead-lettered, not swallowed.
    const p = parseAgentPresence(d.envelope.data);
    const now = this.#bus.clock.now();
    const id = p.card.id;
    let entry = this.#agents.get(id);
    if (!entry) {
      entry = { alive: false, reported: '', card: p.card, instances: new Map() };
      this.#agents.set(id, entry);
    }
    const known = entry.instances.get(p.instance);
    // Announcements of one instance can arrive late or twice (a redelivery): the newest wins.
    if (known && p.seq <= known.seq) return;
    entry.card = p.card;
    entry.instances.set(p.instance, {
      card: p.card,
      seq: p.seq,
      lastSeenMs: now,
      timeoutMs: this.#timeoutMs ?? p.timeoutMs,
      online: p.status === 'online',
    });
    this.#refresh(id, entry, now, 'offline');
  }

  /** Reports agents whose last instance went silent, and forgets what is long gone. */
  #sweep(): void {
    if (this.#closing) return;
    const now = this.#bus.clock.now();
    for (const [id, entry] of this.#agents) this.#refresh(id, entry, now, 'timeout');
  }

  /** Compares an agent's state with what was last reported and reports the difference. */
  #refresh(id: string, entry: Entry, now: number, reason: 'offline' | 'timeout'): void {
    for (const [instance, s] of entry.instances) {
      // A record is kept for a timeout after it went quiet, so that a late announcement of a
      // stopped instance is still recognised as old; then it is forgotten.
      if (now - s.lastSeenMs > s.timeoutMs && (!s.online || now - s.lastSeenMs > 2 * s.timeoutMs)) {
        entry.instances.delete(instance);
      }
    }
    const info = this.#info(id, entry, now);
    const alive = info.instances > 0;
    if (alive) {
      const reported = JSON.stringify([info.card, info.instances]);
      const type = entry.alive ? (reported === entry.reported ? undefined : 'update') : 'join';
      entry.alive = true;
      entry.reported = reported;
      if (type) this.#emit({ type, agent: info });
    } else if (entry.alive) {
      entry.alive = false;
      entry.reported = '';
      this.#emit({ type: 'leave', agent: info, reason });
    }
    if (entry.instances.size === 0 && !entry.alive) this.#agents.delete(id);
  }

  #info(id: string, entry: Entry, now: number): AgentInfo {
    let latest: InstanceState | undefined;
    let instances = 0;
    let lastSeenMs = 0;
    for (const s of entry.instances.values()) {
      lastSeenMs = Math.max(lastSeenMs, s.lastSeenMs);
      if (!s.online || now - s.lastSeenMs > s.timeoutMs) continue;
      instances++;
      if (!latest || s.lastSeenMs >= latest.lastSeenMs) latest = s;
    }
    return Object.freeze({ id, card: latest?.card ?? entry.card, instances, lastSeenMs });
  }

  #alive(): AgentInfo[] {
    const now = this.#bus.clock.now();
    const out: AgentInfo[] = [];
    for (const [id, entry] of this.#agents) if (entry.alive) out.push(this.#info(id, entry, now));
    return out.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  #emit(change: AgentChange): void {
    for (const l of this.#listeners) {
      if (l.type !== change.type) continue;
      try {
        l.fn(change);
      } catch (err) {
        this.#bus.logger.warn({ err, change: change.type, agent: change.agent.id }, 'agent directory listener threw');
      }
    }
    for (const s of [...this.#sinks]) s.push(change);
  }
}

function matches(card: AgentCard, f: AgentFilter): boolean {
  if (f.skill !== undefined && !card.skills.some((s) => s.id === f.skill)) return false;
  if (f.tag !== undefined && !card.skills.some((s) => s.tags?.includes(f.tag as string))) return false;
  if (f.topic !== undefined) {
    const topic = f.topic;
    if (!card.topics.some((p) => p === topic || topicMatches(p, topic))) return false;
  }
  return true;
}
