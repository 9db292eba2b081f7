import {
  AGENT_PRESENCE_TYPE,
  type AgentCard,
  type AgentCardInput,
  type AgentPresence,
  AgentTopics,
  agentCard,
  agentInboxGroup,
  agentInboxTopic,
} from './agent-card.js';
import { agentRuntime } from './agent-runtime.js';
import type { Bus, BusSubscription, SubscribeOptions } from './bus.js';
import type { Delivery } from './delivery.js';
import type { Envelope, PublishOptions } from './envelope.js';
import { ClosedError, ConfigError } from './errors.js';
import type { ReplyOptions, RequestOptions } from './request-reply.js';
import { positiveInteger } from './validate.js';

export * from './agent-card.js';
export * from './agent-directory.js';

export interface AgentOptions {
  /** How often a running agent re-publishes its card. Default 5 s. */
  readonly heartbeatMs?: number;
  /**
   * Announced with the card: directories drop the agent after this long without a heartbeat.
   * Default 3 × `heartbeatMs`.
   */
  readonly heartbeatTimeoutMs?: number;
  /** Answer a directory's discover request by announcing at once. Default true. */
  readonly discoverable?: boolean;
}

export const AGENT_DEFAULTS = Object.freeze({ heartbeatMs: 5_000, heartbeatTimeoutFactor: 3, discoverable: true });

/**
 * Options of the inbox subscription (group and ephemerality are the agent's). A message sent with
 * `send` is retried like any delivery when the handler throws, at most 3 attempts (the limit of
 * `bus.reply`); a request's error goes back to the requester instead.
 */
export interface InboxOptions extends Omit<ReplyOptions, 'group' | 'ephemeral'> {}

export interface BroadcastListenOptions extends Omit<SubscribeOptions, 'group' | 'ephemeral'> {
  /** Also hand the agent the broadcasts it sent itself. Default false. */
  readonly includeOwn?: boolean;
}

/** A message handler of an agent: `delivery.envelope.source` is the sending agent. */
export type AgentHandler<T = unknown, R = unknown> = (delivery: Delivery<T>) => R | Promise<R>;

/** A handler the agent subscribes whenever it runs. */
interface Listener {
  open(): Promise<BusSubscription>;
}

/** One start-to-stop run of an agent. */
interface Run {
  /** Tells this run's announcements from other running copies of the agent. */
  readonly instance: string;
  readonly subs: BusSubscription[];
  readonly opened: Set<Listener>;
  ready: Promise<void>;
  /** The online card was published (or is being published). */
  announced: boolean;
  stopped: boolean;
  timer: NodeJS.Timeout | undefined;
  /** A discover answer is under way (answers to several discovers at once are merged). */
  answering: boolean;
}

/**
 * An agent on the bus (`bus.agent(card)`): an inbox, workspace broadcast and presence.
 *
 * - **Inbox**: `inbox(handler)` consumes topic `agent.<id>.inbox` in the durable group
 *   `agent.<id>`: what others `send` while the agent is down waits for it, and running copies of
 *   one agent share the work. The handler also answers `request`s: its result is the reply.
 * - **Broadcast**: `broadcast(data)` publishes on `workspace.broadcast`; `onBroadcast(handler)`
 *   consumes it in the agent's own durable group `agent.<id>.broadcast`, so every agent gets its
 *   own copy (its own broadcasts are skipped unless `includeOwn`).
 * - **Presence**: `start()` opens the handlers and publishes the card on `agents.presence`, then
 *   again every `heartbeatMs`; `stop()` announces `offline`, then closes the handlers (running
 *   ones finish). A stopped agent can start again. `bus.close()` stops running agents.
 *
 * Handlers may be added before or after `start()`; they are opened on every start.
 * `send`, `request` and `broadcast` work whether the agent runs or not, with `source` = its id.
 */
export class Agent implements AsyncDisposable {
  readonly id: string;
  readonly card: AgentCard;
  readonly heartbeatMs: number;
  readonly heartbeatTimeoutMs: number;
  readonly #bus: Bus;
  readonly #discoverable: boolean;
  readonly #listeners: Listener[] = [];
  #hasInbox = false;
  #hasBroadcast = false;
  #run: Run | undefined;
  #stopping: Promise<void> | undefined;
  #seq = 0;

  constructor(bus: Bus, card: AgentCardInput | string, options: AgentOptions = {}) {
    this.#bus = bus;
    this.card = agentCard(card);
    this.id = this.card.id;
    this.heartbeatMs = positiveInteger(options.heartbeatMs ?? AGENT_DEFAULTS.heartbeatMs, 'agent.heartbeatMs');
    this.heartbeatTimeoutMs = positiveInteger(
      options.heartbeatTimeoutMs ?? this.heartbeatMs * AGENT_DEFAULTS.heartbeatTimeoutFactor,
      'agent.heartbeatTimeoutMs',
    );
    if (this.heartbeatTimeoutMs <= this.heartbeatMs) {
      throw new ConfigError(`must be longer than heartbeatMs (${this.heartbeatMs})`, {
        path: 'agent.heartbeatTimeoutMs',
      });
    }
    this.#discoverable = options.discoverable ?? AGENT_DEFAULTS.discoverable;
  }

  /** Whether the agent is started (and not stopped). */
  get running(): boolean {
    return this.#run !== undefined;
  }

  /**
   * Handles the agent's inbox: messages `send` to it and `request`s (whose reply is what the
   * handler returns). One inbox handler per agent object. Resolves once subscribed if the agent
   * runs, at once otherwise (it is subscribed on start).
   */
  inbox<T = unknown, R = unknown>(handler: AgentHandler<T, R>, options: InboxOptions = {}): Promise<void> {
    if (typeof handler !== 'function') throw new ConfigError('a handler function is required', { path: 'inbox' });
    if (this.#hasInbox) throw new ConfigError(`agent ${this.id} already has an inbox handler`, { path: 'inbox' });
    this.#hasInbox = true;
    const topic = agentInboxTopic(this.id);
    const group = agentInboxGroup(this.id);
    return this.#listen({ open: () => this.#bus.reply<T, R>(topic, handler, { ...options, group }) });
  }

  /** Handles workspace broadcasts in the agent's own group (see the class description). */
  onBroadcast<T = unknown>(handler: AgentHandler<T>, options: BroadcastListenOptions = {}): Promise<void> {
    if (typeof handler !== 'function') throw new ConfigError('a handler function is required', { path: 'onBroadcast' });
    if (this.#hasBroadcast) {
      throw new ConfigError(`agent ${this.id} already has a broadcast handler`, { path: 'onBroadcast' });
    }
    this.#hasBroadcast = true;
    const { includeOwn = false, ...subscribe } = options;
    const group = `${agentInboxGroup(this.id)}.broadcast`;
    return this.#listen({
      open: () =>
        this.#bus.subscribe<T>(
          AgentTopics.broadcast,
          (d) => (includeOwn || d.envelope.source !== this.id ? handler(d) : undefined),
          { ...subscribe, group },
        ),
    });
  }

  /** Sends `data` to another agent's inbox (it waits there while that agent is down). */
  send<T>(agentId: string, data: T, options: PublishOptions = {}): Promise<Envelope<T>> {
    return this.#bus.publish(agentInboxTopic(agentId), data, { ...options, source: this.id });
  }

  /**
   * Asks another agent and resolves with what its inbox handler returns (`bus.request`):
   * TimeoutError when it does not answer in time, its error rebuilt as the same class.
   */
  request<R = unknown, T = unknown>(agentId: string, data: T, options: RequestOptions = {}): Promise<R> {
    return this.#bus.request<R, T>(agentInboxTopic(agentId), data, { ...options, source: this.id });
  }

  /** Publishes `data` to every agent listening to workspace broadcasts. */
  broadcast<T>(data: T, options: PublishOptions = {}): Promise<Envelope<T>> {
    return this.#bus.publish(AgentTopics.broadcast, data, { ...options, source: this.id });
  }

  /**
   * Opens the handlers, publishes the card (`online`) and keeps re-publishing it every
   * `heartbeatMs`. Idempotent while running; after `stop()` it starts a new run.
   */
  start(): Promise<void> {
    if (this.#run) return this.#run.ready;
    const run: Run = {
      instance: this.#bus.ids(),
      subs: [],
      opened: new Set(),
      ready: Promise.resolve(),
      announced: false,
      stopped: false,
      timer: undefined,
      answering: false,
    };
    this.#run = run;
    agentRuntime(this.#bus).agents.add(this);
    const previous = this.#stopping;
    run.ready = (async () => {
      await previous; // a stop under way finishes first
      try {
        for (const l of [...this.#listeners]) await this.#open(run, l);
        if (this.#discoverable) await this.#openDiscover(run);
        if (run.stopped) return;
        run.announced = true;
        await this.#announce(run, 'online');
        if (run.stopped) return;
        run.timer = setInterval(() => {
          this.#announce(run, 'online').catch((err: unknown) => {
            this.#bus.logger.warn({ err, agent: this.id }, 'agent heartbeat failed');
          });
        }, this.heartbeatMs);
        run.timer.unref();
      } catch (err) {
        // Not awaited: stop() waits for this run to settle first.
        if (this.#run === run) {
          this.stop().catch((e: unknown) => this.#bus.logger.warn({ err: e, agent: this.id }, 'agent stop failed'));
        }
        throw err;
      }
    })();
    return run.ready;
  }

  /**
   * Announces `offline` (directories drop the agent at once), then closes the handlers and waits
   * for running ones. Idempotent. The announcement is published before this returns (before any
   * await), which lets `bus.close()` stop its agents while it still takes publishes.
   */
  stop(): Promise<void> {
    const run = this.#run;
    if (!run) return this.#stopping ?? Promise.resolve();
    this.#run = undefined;
    run.stopped = true;
    clearInterval(run.timer);
    agentRuntime(this.#bus).agents.delete(this);
    let offline = run.announced ? this.#announce(run, 'offline') : undefined;
    this.#stopping = (async () => {
      await run.ready.catch(() => undefined);
      offline ??= run.announced ? this.#announce(run, 'offline') : undefined;
      await offline?.catch((err: unknown) => {
        this.#bus.logger.warn({ err, agent: this.id }, 'agent could not announce that it is offline');
      });
      await Promise.all(run.subs.map((s) => s.close()));
    })();
    return this.#stopping;
  }

  /** Publishes the card now (running agents only), e.g. after something it reports changed. */
  async announce(): Promise<void> {
    const run = this.#run;
    if (!run?.announced) throw new ClosedError(`agent ${this.id} is not running`);
    await this.#announce(run, 'online');
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  #announce(run: Run, status: AgentPresence['status']): Promise<Envelope<AgentPresence>> {
    const presence: AgentPresence = {
      status,
      card: this.card,
      instance: run.instance,
      seq: ++this.#seq,
      heartbeatMs: this.heartbeatMs,
      timeoutMs: this.heartbeatTimeoutMs,
    };
    return this.#bus.publish(AgentTopics.presence, presence, { source: this.id, type: AGENT_PRESENCE_TYPE });
  }

  async #listen(l: Listener): Promise<void> {
    this.#listeners.push(l);
    const run = this.#run;
    if (!run) return;
    await run.ready;
    await this.#open(run, l);
  }

  async #open(run: Run, l: Listener): Promise<void> {
    if (run.stopped || run.opened.has(l)) return;
    run.opened.add(l);
    const sub = await l.open();
    // Stopped while subscribing: stop() may have closed the others already.
    if (run.stopped) await sub.close();
    else run.subs.push(sub);
  }

  #openDiscover(run: Run): Promise<void> {
    // An ephemeral group per run: every running copy of the agent answers for itself.
    const group = `${agentInboxGroup(this.id)}.discover.${run.instance.replaceAll('.', '-')}`;
    return this.#open(run, {
      open: () =>
        this.#bus.subscribe(AgentTopics.discover, () => this.#answerDiscover(run), {
          group,
          ephemeral: true,
          maxAttempts: 1,
        }),
    });
  }

  async #answerDiscover(run: Run): Promise<void> {
    if (run.stopped || !run.announced || run.answering) return;
    run.answering = true;
    try {
      await this.#announce(run, 'online');
    } catch (err) {
      this.#bus.logger.warn({ err, agent: this.id }, 'agent could not answer a discover request');
    } finally {
      run.answering = false;
    }
  }
}
