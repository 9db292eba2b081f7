import type { Bus, BusSubscription } from './bus.js';
import {
  CHAT_ENVELOPE_TYPES,
  CHAT_EVENT_TYPES,
  type ChatEnd,
  type ChatEndReason,
  type ChatHistoryOptions,
  type ChatPrompt,
  type ChatSaid,
  type ChatTurn,
  chatHistory,
  chatPrefix,
  chatSegment,
  chatStreamId,
  chatTopics,
  endOf,
  parseSaid,
  turnOf,
} from './chat-history.js';
import type { Envelope } from './envelope.js';
import { ClosedError, ConcurrencyError, ConfigError, describeError, isRetryable } from './errors.js';
import type { EventStore, StoredEvent } from './event-store.js';
import {
  type ChatOpening,
  GROUP_CHAT_DEFAULTS,
  type GroupChatOptions,
  type GroupChatStats,
  openingOf,
  stopPredicate,
} from './group-chat-options.js';
import { type Logger, stderrLogger } from './logger.js';
import { roundRobin, type SpeakerSelector } from './speaker-selection.js';
import { positiveInteger } from './validate.js';

export * from './chat-history.js';
export * from './chat-participant.js';
export * from './group-chat-options.js';
export * from './speaker-selection.js';

interface Expected {
  readonly turn: number;
  readonly speaker: string;
  prompted: boolean;
}

/**
 * The moderator of a group chat among agents. It prompts the selected participant (“your turn”, on
 * `<prefix>.<id>.turn.<agent>`, with the history), takes its turn from `<prefix>.<id>.said`, stores
 * it as the next event of the stream `chat-<id>`, picks the next speaker, and so on until
 * `maxTurns`, a stop message, `end()`, a turn timeout or an error; then it stores and publishes
 * the end (`<prefix>.<id>.ended`).
 *
 * Each turn is stored exactly once: its append expects the stream at the previous turn
 * (`expectedVersion`), so a redelivered or duplicated turn, a second answer to a repeated prompt,
 * or a turn another moderator stored first is never appended twice nor advances the chat twice.
 * The version check, not the dedup or sequencing middleware, is what guarantees it: it is atomic
 * with the append and kept with the history itself, it also refuses a *different* envelope for a
 * turn already taken (dedup only knows envelope ids), and it never drops the real turn *n* because
 * an envelope the moderator refused claimed *n* first (as sequencing would).
 * Turns are taken only from the agent whose turn it is (the envelope's `source` and the turn's
 * `speaker`). Everything the moderator decides is derived from the stored history, so a new
 * moderator started with the same id and store resumes a conversation whose moderator stopped or
 * died: it asks the expected speaker again (a participant that already answered skips it; its
 * answer waits in the moderator's durable group `<prefix>.<id>.moderator`). Run one moderator per
 * chat at a time: a second would prompt too (turns would still be stored once).
 */
export class GroupChat {
  readonly id: string;
  readonly streamId: string;
  readonly participants: readonly string[];
  /** Resolves with how the chat ended; rejects with ClosedError if the moderator was closed first. */
  readonly done: Promise<ChatEnd>;
  readonly #bus: Bus;
  readonly #store: EventStore;
  readonly #selector: SpeakerSelector;
  readonly #maxTurns: number;
  readonly #stop: ((turn: ChatTurn, history: readonly ChatTurn[]) => boolean) | undefined;
  readonly #turnTimeoutMs: number | undefined;
  readonly #ackTimeoutMs: number | undefined;
  readonly #promptHistory: number;
  readonly #topics: ReturnType<typeof chatTopics>;
  readonly #group: string;
  readonly #logger: Logger;
  readonly #turns: ChatTurn[] = [];
  /** The stream's version as last seen. */
  #version = 0;
  #end: ChatEnd | undefined;
  #announced = false;
  #expected: Expected | undefined;
  #sub: BusSubscription | undefined;
  #timer: NodeJS.Timeout | undefined;
  #queue: Promise<unknown> = Promise.resolve();
  #starting: Promise<void> | undefined;
  #closing: Promise<void> | undefined;
  #duplicates = 0;
  #rejected = 0;
  #resolve!: (end: ChatEnd) => void;
  #reject!: (err: Error) => void;

  constructor(bus: Bus, options: GroupChatOptions) {
    if (typeof bus?.subscribe !== 'function') throw new ConfigError('a Bus is required', { path: 'bus' });
    this.#bus = bus;
    this.id = chatSegment(options?.id, 'id');
    this.streamId = chatStreamId(this.id);
    const participants = options.participants;
    if (!Array.isArray(participants) || participants.length === 0) {
      throw new ConfigError('must be a non-empty array of agent ids', { path: 'participants' });
    }
    for (const [i, p] of participants.entries()) chatSegment(p, `participants[${i}]`);
    if (new Set(participants).size !== participants.length) {
      throw new ConfigError('must not repeat an agent id', { path: 'participants' });
    }
    this.participants = Object.freeze([...participants]);
    if (typeof options.store?.append !== 'function')
      throw new ConfigError('an EventStore is required', { path: 'store' });
    this.#store = options.store;
    this.#selector = options.selectSpeaker ?? roundRobin();
    if (typeof this.#selector?.select !== 'function') {
      throw new ConfigError('must be a SpeakerSelector (roundRobin(), selector(fn))', { path: 'selectSpeaker' });
    }
    this.#maxTurns = positiveInteger(options.maxTurns ?? GROUP_CHAT_DEFAULTS.maxTurns, 'maxTurns');
    this.#stop = stopPredicate(options.stopWhen);
    if (options.turnTimeoutMs !== undefined) positiveInteger(options.turnTimeoutMs, 'turnTimeoutMs');
    this.#turnTimeoutMs = options.turnTimeoutMs;
    if (options.ackTimeoutMs !== undefined) positiveInteger(options.ackTimeoutMs, 'ackTimeoutMs');
    this.#ackTimeoutMs = options.ackTimeoutMs;
    this.#promptHistory =
      options.promptHistory === undefined
        ? Number.POSITIVE_INFINITY
        : positiveInteger(options.promptHistory, 'promptHistory');
    const prefix = chatPrefix(options.topicPrefix ?? GROUP_CHAT_DEFAULTS.topicPrefix, 'topicPrefix');
    this.#topics = chatTopics(this.id, prefix);
    this.#group = `${prefix}.${this.id}.moderator`;
    this.#logger = options.logger ?? bus.logger ?? stderrLogger;
    this.done = new Promise<ChatEnd>((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
    this.done.catch(() => {}); // a caller that never looks at `done` leaves no unhandled rejection
  }

  /** The turns so far, as this moderator knows them. */
  get turns(): readonly ChatTurn[] {
    return this.#turns;
  }

  /** How the chat ended, once it has. */
  get ended(): ChatEnd | undefined {
    return this.#end;
  }

  get stats(): GroupChatStats {
    return { turns: this.#turns.length, duplicates: this.#duplicates, rejected: this.#rejected };
  }

  /**
   * Starts the chat, or resumes it from its stored history: subscribes to the participants' turns,
   * then says the opening as turn 1 (only when nothing is stored yet) or prompts the next speaker.
   * A chat found ended resolves `done` at once. Resolves once the first prompt was published.
   */
  start(opening?: ChatOpening): Promise<this> {
    if (this.#closing) return Promise.reject(new ClosedError('group chat is closed'));
    const open = opening === undefined ? undefined : openingOf(opening);
    this.#starting ??= this.#exclusive(async () => {
      if (this.#closing) throw new ClosedError('group chat is closed');
      this.#sub ??= await this.#bus.subscribe<ChatSaid>(
        this.#topics.said,
        (d) => this.#exclusive(() => this.#onSaid(d.envelope)),
        {
          group: this.#group,
          concurrency: 1,
          ...(this.#ackTimeoutMs === undefined ? {} : { ackTimeoutMs: this.#ackTimeoutMs }),
        },
      );
      await this.#refresh();
      if (this.#end === undefined && this.#version === 0 && open !== undefined) {
        this.#expected = { turn: 1, speaker: open.speaker, prompted: true };
        const said: ChatSaid = { chatId: this.id, turn: 1, speaker: open.speaker, content: open.content };
        await this.#bus.publish(this.#topics.said, said, {
          type: CHAT_ENVELOPE_TYPES.said,
          source: open.speaker,
          workflowid: this.id,
          sequence: 1,
        });
      } else await this.#advance();
    });
    this.#starting.catch(() => {
      this.#starting = undefined; // may be started again
    });
    return this.#starting.then(() => this);
  }

  /** Ends the chat (reason `ended`, with `note`), unless it has ended already; resolves with the end. */
  end(note?: string): Promise<ChatEnd> {
    return this.#exclusive(async () => {
      await this.#refresh();
      await this.#finish(() => ({ reason: 'ended', ...(note === undefined ? {} : { note }) }));
      await this.#announce();
      return this.#end as ChatEnd;
    });
  }

  /** The stored turns from `fromTurn` (see {@link chatHistory}). */
  history(options: ChatHistoryOptions = {}): AsyncGenerator<ChatTurn> {
    return chatHistory(this.#store, this.id, options);
  }

  /**
   * Stops moderating without ending the chat: no more turns are taken (those that come wait in the
   * moderator's group for the next moderator), `done` rejects with ClosedError unless the chat had
   * ended. Does not close the bus or the store. Idempotent.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      clearTimeout(this.#timer);
      await this.#sub?.close();
      await this.#queue;
      await this.#sub?.close(); // subscribed by a start() that was running when close() was called
      clearTimeout(this.#timer);
      if (this.#end === undefined) this.#reject(new ClosedError(`group chat ${this.id} was closed before it ended`));
    })();
    return this.#closing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** Runs `f` after everything queued before it: the moderator decides one thing at a time. */
  #exclusive<R>(f: () => Promise<R>): Promise<R> {
    const run = this.#queue.then(f);
    this.#queue = run.catch(() => {});
    return run;
  }

  /** Reads what the stream holds past the version seen (everything, the first time). */
  async #refresh(): Promise<void> {
    for await (const e of this.#store.read(this.streamId, { fromVersion: this.#version + 1 })) {
      this.#version = e.version;
      if (e.type === CHAT_EVENT_TYPES.turn) this.#turns.push(turnOf(e));
      else if (e.type === CHAT_EVENT_TYPES.ended) this.#end ??= endOf(this.id, e);
    }
    if (this.#expected !== undefined && this.#expected.turn <= this.#version) this.#expected = undefined;
  }

  async #onSaid(env: Envelope<ChatSaid>): Promise<void> {
    const said = parseSaid(env, this.id);
    // From a turn ahead: another moderator stored turns meanwhile.
    if (said.turn > this.#version + 1 && this.#end === undefined) await this.#refresh();
    if (said.turn <= this.#version) {
      this.#late(said, env);
      await this.#advance(); // a redelivery after a failed prompt publish tries it again
      return;
    }
    if (this.#end === undefined && this.#expected?.turn !== said.turn) await this.#advance();
    const expected = this.#expected;
    if (
      this.#end !== undefined ||
      expected?.turn !== said.turn ||
      expected.speaker !== said.speaker ||
      env.source !== said.speaker
    ) {
      this.#rejected++;
      this.#logger.debug(
        {
          chatId: this.id,
          turn: said.turn,
          speaker: said.speaker,
          source: env.source,
          expected,
          ended: this.#end?.reason,
        },
        'chat turn refused',
      );
      return;
    }
    try {
      const r = await this.#store.append(
        this.streamId,
        [{ id: env.id, type: CHAT_EVENT_TYPES.turn, data: { speaker: said.speaker, content: said.content } }],
        { expectedVersion: said.turn - 1 },
      );
      this.#turns.push(turnOf(r.events[0] as StoredEvent));
      this.#version = r.version;
      this.#expected = undefined;
      clearTimeout(this.#timer);
    } catch (err) {
      if (!(err instanceof ConcurrencyError)) throw err; // the store failed: the delivery is retried
      // Stored meanwhile by someone else (another moderator, or this turn before a crash).
      await this.#refresh();
      if (said.turn <= this.#version) this.#late(said, env);
      else this.#rejected++;
    }
    await this.#advance();
  }

  /** Counts a turn that came after its turn number was stored. */
  #late(said: ChatSaid, env: Envelope): void {
    const stored = this.#turns[said.turn - 1];
    if (stored?.id === env.id) this.#duplicates++;
    else this.#rejected++;
  }

  /** Ends the chat if its last turn calls for it, else makes sure the next speaker was prompted. */
  async #advance(): Promise<void> {
    if (this.#end === undefined) await this.#finish(() => this.#termination());
    if (this.#end !== undefined) return this.#announce();
    if (this.#closing) return; // the next moderator prompts
    const turn = this.#version + 1;
    if (this.#expected?.turn === turn && this.#expected.prompted) return;
    if (this.#expected?.turn !== turn) {
      let speaker: string;
      try {
        speaker = await this.#selector.select([...this.#turns], this.participants, { chatId: this.id, turn });
        if (!this.participants.includes(speaker)) {
          throw new ConfigError(
            `speaker selection ${this.#selector.name} chose ${JSON.stringify(speaker)}, not a participant`,
          );
        }
      } catch (err) {
        await this.#finish(() => ({ reason: 'error', note: describeError(err) }));
        return this.#announce();
      }
      this.#expected = { turn, speaker, prompted: false };
    }
    const expected = this.#expected as Expected;
    const prompt: ChatPrompt = {
      chatId: this.id,
      turn,
      speaker: expected.speaker,
      participants: this.participants,
      history: this.#turns.slice(-this.#promptHistory),
    };
    try {
      await this.#bus.publish(this.#topics.prompt(expected.speaker), prompt, {
        type: CHAT_ENVELOPE_TYPES.prompt,
        replyto: this.#topics.said,
        correlationid: this.id,
      });
    } catch (err) {
      // A transport hiccup: the delivery that led here is retried, and its redelivery (a duplicate
      // by then) comes back here to publish the prompt again. A prompt that can never be sent (too
      // large for maxPayloadBytes: see promptHistory) ends the chat instead of stalling it.
      if (isRetryable(err)) throw err;
      await this.#finish(() => ({ reason: 'error', note: `prompting ${expected.speaker}: ${describeError(err)}` }));
      return this.#announce();
    }
    expected.prompted = true;
    this.#armTimer(turn, expected.speaker);
  }

  /** Why the chat should end after its last turn, if it should. */
  #termination(): { reason: ChatEndReason; note?: string } | undefined {
    const last = this.#turns[this.#turns.length - 1];
    if (last === undefined) return undefined;
    if (this.#stop && this.participants.includes(last.speaker)) {
      try {
        if (this.#stop(last, this.#turns))
          return { reason: 'stop-message', note: `turn ${last.turn} by ${last.speaker}` };
      } catch (err) {
        return { reason: 'error', note: `stopWhen failed: ${describeError(err)}` };
      }
    }
    if (last.turn >= this.#maxTurns) return { reason: 'max-turns' };
    return undefined;
  }

  /**
   * Stores the end if `why` (asked again after each refresh) still calls for it. The append expects
   * the version seen: if a turn was stored meanwhile, the chat is looked at again.
   */
  async #finish(why: () => { reason: ChatEndReason; note?: string } | undefined): Promise<void> {
    for (;;) {
      if (this.#end !== undefined) return;
      const w = why();
      if (w === undefined) return;
      const data = { reason: w.reason, turns: this.#turns.length, ...(w.note === undefined ? {} : { note: w.note }) };
      try {
        const r = await this.#store.append(this.streamId, [{ type: CHAT_EVENT_TYPES.ended, data }], {
          expectedVersion: this.#version,
        });
        this.#version = r.version;
        this.#end = endOf(this.id, r.events[0] as StoredEvent);
        this.#expected = undefined;
        clearTimeout(this.#timer);
        return;
      } catch (err) {
        if (!(err instanceof ConcurrencyError)) throw err;
        await this.#refresh();
      }
    }
  }

  /** Publishes the end (once per moderator; its id is the stored event's) and settles `done`. */
  async #announce(): Promise<void> {
    const end = this.#end;
    if (end === undefined) return;
    this.#resolve(end);
    if (this.#announced) return;
    await this.#bus.publish(this.#topics.ended, end, {
      id: end.id,
      type: CHAT_ENVELOPE_TYPES.ended,
      workflowid: this.id,
      sequence: this.#version,
    });
    this.#announced = true;
  }

  #armTimer(turn: number, speaker: string): void {
    const ms = this.#turnTimeoutMs;
    if (ms === undefined) return;
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.#exclusive(async () => {
        if (this.#end !== undefined || this.#closing || this.#expected?.turn !== turn) return;
        await this.#finish(() =>
          this.#expected?.turn === turn
            ? { reason: 'turn-timeout', note: `${speaker} did not speak turn ${turn} within ${ms} ms` }
            : undefined,
        );
        await this.#advance();
      }).catch((err: unknown) => this.#logger.error({ err, chatId: this.id, turn }, 'ending a timed-out chat failed'));
    }, ms);
  }
}

/**
 * A group chat moderated on `bus` (see {@link GroupChat}); call `start(opening?)` to begin or to
 * resume it, and await `done` for how it ended.
 */
export function groupChat(bus: Bus, options: GroupChatOptions): GroupChat {
  return new GroupChat(bus, options);
}
