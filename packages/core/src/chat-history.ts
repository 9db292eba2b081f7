import type { Envelope } from './envelope.js';
import { ConfigError, ValidationError } from './errors.js';
import type { EventStore, StoredEvent } from './event-store.js';

/** One turn of a group chat, as its history holds it. */
export interface ChatTurn {
  /**
   * 1, 2, 3 … — the turn's version in the chat's event stream, and the `sequence` of the envelope
   * that carried it.
   */
  readonly turn: number;
  /** The agent (or, for an opening, whoever opened the chat) that spoke. */
  readonly speaker: string;
  readonly content: string;
  /** RFC 3339 time the turn was recorded. */
  readonly time: string;
  /** The turn's id: the id of the envelope that carried it, and of the event that stores it. */
  readonly id: string;
}

/**
 * Why a chat ended: its last turn was turn `maxTurns`; a participant's turn met `stopWhen`;
 * `end()` was called; the speaker did not answer within `turnTimeoutMs`; the speaker selection or
 * the stop condition failed (`note` says how).
 */
export type ChatEndReason = 'max-turns' | 'stop-message' | 'ended' | 'turn-timeout' | 'error';

/** How a chat ended: the last event of its stream, and the data of its `ended` envelope. */
export interface ChatEnd {
  readonly chatId: string;
  readonly reason: ChatEndReason;
  /** Turns in the conversation. */
  readonly turns: number;
  /** Details: the note given to `end()`, the error, the speaker that timed out. */
  readonly note?: string;
  /** RFC 3339 time the end was recorded. */
  readonly time: string;
  /** Id of the stored event (and of the `ended` envelope, so a re-announcement is recognised as a duplicate). */
  readonly id: string;
}

/** What `followChat` yields: each turn, then the end. */
export type ChatEvent = (ChatTurn & { readonly kind: 'turn' }) | (ChatEnd & { readonly kind: 'ended' });

/** What a participant receives on `<prefix>.<chatId>.turn.<agentId>`: its turn to speak. */
export interface ChatPrompt {
  readonly chatId: string;
  /** The number of the turn asked for. */
  readonly turn: number;
  /** Whom it asks (the agent id in the topic). */
  readonly speaker: string;
  readonly participants: readonly string[];
  /** The turns so far (the last `promptHistory` of them), oldest first. */
  readonly history: readonly ChatTurn[];
}

/** What a participant publishes on the prompt's `replyto` (`<prefix>.<chatId>.said`): its turn. */
export interface ChatSaid {
  readonly chatId: string;
  readonly turn: number;
  readonly speaker: string;
  readonly content: string;
}

/** Event types of a chat's stream. */
export const CHAT_EVENT_TYPES = Object.freeze({ turn: 'chat.turn', ended: 'chat.ended' });

/** Envelope types of the chat protocol. */
export const CHAT_ENVELOPE_TYPES = Object.freeze({ prompt: 'chat.prompt', said: 'chat.said', ended: 'chat.ended' });

/** The event stream that holds a chat: `chat-<chatId>`. */
export function chatStreamId(chatId: string): string {
  return `chat-${chatId}`;
}

/** The topics of a chat under `prefix` (default `chat`). */
export function chatTopics(chatId: string, prefix = 'chat') {
  return {
    /** Participants' turns, consumed by the moderator. */
    said: `${prefix}.${chatId}.said`,
    /** "Your turn" for one participant. */
    prompt: (agentId: string) => `${prefix}.${chatId}.turn.${agentId}`,
    /** How the chat ended, for observers. */
    ended: `${prefix}.${chatId}.ended`,
  };
}

const SEGMENT = /^[A-Za-z0-9_\-:@$]{1,128}$/;

/** A chat id, agent id or topic prefix segment: one topic segment (`[A-Za-z0-9_-:@$]`, at most 128), or a ConfigError. */
export function chatSegment(value: unknown, path: string): string {
  if (typeof value !== 'string' || !SEGMENT.test(value)) {
    throw new ConfigError(`must be one topic segment of [A-Za-z0-9_-:@$], got ${JSON.stringify(value)}`, { path });
  }
  return value;
}

/** A topic prefix: one or more segments. */
export function chatPrefix(value: unknown, path: string): string {
  if (typeof value !== 'string' || value.split('.').some((s) => !SEGMENT.test(s))) {
    throw new ConfigError(`must be dot-separated topic segments, got ${JSON.stringify(value)}`, { path });
  }
  return value;
}

/** The turn a stored `chat.turn` event holds. */
export function turnOf(e: StoredEvent): ChatTurn {
  const d = e.data as { speaker: string; content: string };
  return { turn: e.version, speaker: d.speaker, content: d.content, time: e.time, id: e.id };
}

/** The end a stored `chat.ended` event holds. */
export function endOf(chatId: string, e: StoredEvent): ChatEnd {
  const d = e.data as { reason: ChatEndReason; turns: number; note?: string };
  return {
    chatId,
    reason: d.reason,
    turns: d.turns,
    ...(d.note === undefined ? {} : { note: d.note }),
    time: e.time,
    id: e.id,
  };
}

function isString(v: unknown): v is string {
  return typeof v === 'string';
}

function isTurnNumber(v: unknown): v is number {
  return Number.isSafeInteger(v) && (v as number) >= 1;
}

/** The turn an envelope on `said` carries, or a ValidationError (the delivery is dead-lettered). */
export function parseSaid(env: Envelope, chatId: string): ChatSaid {
  const d = env.data as Partial<ChatSaid> | null;
  if (
    typeof d !== 'object' ||
    d === null ||
    d.chatId !== chatId ||
    !isTurnNumber(d.turn) ||
    !isString(d.speaker) ||
    d.speaker === '' ||
    !isString(d.content)
  ) {
    throw new ValidationError(
      `envelope ${env.id} is not a turn of chat ${chatId} ({ chatId, turn, speaker, content })`,
    );
  }
  return { chatId, turn: d.turn, speaker: d.speaker, content: d.content };
}

/** The prompt an envelope carries, or a ValidationError (the delivery is dead-lettered). */
export function parsePrompt(env: Envelope): ChatPrompt {
  const d = env.data as Partial<ChatPrompt> | null;
  if (
    typeof d !== 'object' ||
    d === null ||
    !isString(d.chatId) ||
    !isTurnNumber(d.turn) ||
    !isString(d.speaker) ||
    !Array.isArray(d.participants) ||
    !Array.isArray(d.history) ||
    !isString(env.replyto)
  ) {
    throw new ValidationError(
      `envelope ${env.id} is not a chat prompt ({ chatId, turn, speaker, participants, history } and replyto)`,
    );
  }
  return d as ChatPrompt;
}

function fromTurnOf(value: number | undefined): number {
  if (value === undefined) return 1;
  if (!isTurnNumber(value)) throw new ValidationError(`invalid fromTurn ${String(value)}: an integer >= 1 expected`);
  return value;
}

export interface ChatHistoryOptions {
  /** First turn to read (default 1, the beginning). */
  readonly fromTurn?: number;
  /** At most this many turns (default: all). */
  readonly limit?: number;
}

/**
 * The turns of a chat stored so far, in order, from `fromTurn`: read from its event stream, so
 * any process with the store (another connection to the file or server) can read it.
 */
export async function* chatHistory(
  store: EventStore,
  chatId: string,
  options: ChatHistoryOptions = {},
): AsyncGenerator<ChatTurn> {
  const fromVersion = fromTurnOf(options.fromTurn);
  const read = store.read(chatStreamId(chatId), {
    fromVersion,
    ...(options.limit === undefined ? {} : { limit: options.limit }),
  });
  for await (const e of read) if (e.type === CHAT_EVENT_TYPES.turn) yield turnOf(e);
}

/** Collects {@link chatHistory} into an array. */
export async function readChat(
  store: EventStore,
  chatId: string,
  options: ChatHistoryOptions = {},
): Promise<ChatTurn[]> {
  const out: ChatTurn[] = [];
  for await (const t of chatHistory(store, chatId, options)) out.push(t);
  return out;
}

export interface FollowChatOptions {
  /** First turn to yield (default 1: the whole conversation, then live). */
  readonly fromTurn?: number;
  /** Aborting it ends the iteration. */
  readonly signal?: AbortSignal;
}

function chatEventOf(chatId: string, e: StoredEvent): ChatEvent | undefined {
  if (e.type === CHAT_EVENT_TYPES.turn) return { kind: 'turn', ...turnOf(e) };
  if (e.type === CHAT_EVENT_TYPES.ended) return { kind: 'ended', ...endOf(chatId, e) };
  return undefined;
}

/**
 * Follows a chat from `fromTurn`: yields the turns stored so far, then each one as it is stored
 * (at once through the same store object, within the store's poll interval from another process,
 * or at once where the backend notifies), and finally the end, after which the iteration finishes.
 * A chat that ended before `fromTurn` yields nothing. Stops early on `break` or when `signal` aborts.
 */
export async function* followChat(
  store: EventStore,
  chatId: string,
  options: FollowChatOptions = {},
): AsyncGenerator<ChatEvent> {
  const streamId = chatStreamId(chatId);
  const fromTurn = fromTurnOf(options.fromTurn);
  const { signal } = options;
  if (signal?.aborted) return;
  // Head first: an event at fromTurn stored after it has a later position, one stored before it is
  // found by the read below.
  const head = await store.head();
  let from = head + 1;
  for await (const e of store.read(streamId, { fromVersion: fromTurn, limit: 1 })) from = e.position;
  if (from === head + 1) {
    const version = await store.version(streamId);
    if (version > 0) {
      for await (const e of store.read(streamId, { fromVersion: version })) {
        if (e.type === CHAT_EVENT_TYPES.ended) return; // ended before fromTurn
      }
    }
  }
  const queue: StoredEvent[] = [];
  let wake: (() => void) | undefined;
  const poke = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  const sub = store.subscribeAll(
    (e) => {
      if (e.streamId !== streamId || e.version < fromTurn) return;
      queue.push(e);
      poke();
    },
    { fromPosition: from },
  );
  let stopped = false;
  let failure: unknown;
  sub.done.then(
    () => {
      stopped = true;
      poke();
    },
    (err: unknown) => {
      stopped = true;
      failure = err ?? new Error('chat subscription failed');
      poke();
    },
  );
  const onAbort = () => void sub.close();
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    for (;;) {
      const e = queue.shift();
      if (e !== undefined) {
        const ev = chatEventOf(chatId, e);
        if (ev === undefined) continue;
        yield ev;
        if (ev.kind === 'ended') return;
        continue;
      }
      if (stopped || signal?.aborted) {
        if (failure !== undefined && !signal?.aborted) throw failure;
        return;
      }
      await new Promise<void>((r) => {
        wake = r;
      });
    }
  } finally {
    signal?.removeEventListener('abort', onAbort);
    await sub.close();
  }
}
