import type { ChatTurn } from './chat-history.js';
import { ConfigError } from './errors.js';
import type { EventStore } from './event-store.js';
import type { Logger } from './logger.js';
import type { SpeakerSelector } from './speaker-selection.js';

/**
 * When a participant's turn ends the chat: its content contains the string (e.g. `TERMINATE`),
 * matches the RegExp, or the predicate holds.
 */
export type StopCondition = string | RegExp | ((turn: ChatTurn, history: readonly ChatTurn[]) => boolean);

export interface GroupChatOptions {
  /** The conversation id (one topic segment): the envelopes' `workflowid`, the stream `chat-<id>`. */
  readonly id: string;
  /** The agents taking part (one topic segment each), in the order round robin gives them turns. */
  readonly participants: readonly string[];
  /** Where the conversation is stored: its history and the record a resumed moderator starts from. */
  readonly store: EventStore;
  /** Who speaks next (default `roundRobin()`). */
  readonly selectSpeaker?: SpeakerSelector;
  /** The chat ends after this turn (default 20; an opening counts as a turn). */
  readonly maxTurns?: number;
  /** Ends the chat after a participant's turn that meets it (an opening never does). */
  readonly stopWhen?: StopCondition;
  /** Ends the chat (`turn-timeout`) when the speaker has not answered this long after its prompt (default: never). */
  readonly turnTimeoutMs?: number;
  /**
   * Lease of a turn the moderator is handling (default: the bus's, 30 s; renewed while it runs). A
   * turn a moderator took and then died with comes back to the next moderator after this.
   */
  readonly ackTimeoutMs?: number;
  /** A prompt carries at most this many of the latest turns (default: all of them). */
  readonly promptHistory?: number;
  /** Topics are `<prefix>.<id>.said|turn.<agent>|ended` (default `chat`); participants must use the same. */
  readonly topicPrefix?: string;
  readonly logger?: Logger;
}

export const GROUP_CHAT_DEFAULTS = Object.freeze({ maxTurns: 20, topicPrefix: 'chat', openingSpeaker: 'user' });

/** How a chat was opened: what is said as turn 1, and by whom (default `user`). */
export type ChatOpening = string | { readonly speaker?: string; readonly content: string };

/** Counters of a moderator. */
export interface GroupChatStats {
  /** Turns in the history. */
  readonly turns: number;
  /** Turns received again after they were stored (redeliveries, publisher retries): not stored again. */
  readonly duplicates: number;
  /** Turns refused: out of turn, a second answer for a turn already spoken, after the end. */
  readonly rejected: number;
}

/** The stop condition as a predicate (validated). */
export function stopPredicate(
  stop: StopCondition | undefined,
): ((turn: ChatTurn, history: readonly ChatTurn[]) => boolean) | undefined {
  if (stop === undefined) return undefined;
  if (typeof stop === 'string') {
    if (stop === '') throw new ConfigError('must not be empty', { path: 'stopWhen' });
    return (t) => t.content.includes(stop);
  }
  if (stop instanceof RegExp) {
    return (t) => {
      stop.lastIndex = 0; // a global or sticky RegExp keeps state between tests
      return stop.test(t.content);
    };
  }
  if (typeof stop === 'function') return stop;
  throw new ConfigError('must be a string, a RegExp or a predicate', { path: 'stopWhen' });
}

/** The opening as speaker and content (validated). */
export function openingOf(opening: ChatOpening): { speaker: string; content: string } {
  const o = typeof opening === 'string' ? { content: opening } : opening;
  const speaker = o?.speaker ?? GROUP_CHAT_DEFAULTS.openingSpeaker;
  if (typeof o?.content !== 'string') throw new ConfigError('must be a string', { path: 'opening.content' });
  if (typeof speaker !== 'string' || speaker === '')
    throw new ConfigError('must be a non-empty string', { path: 'opening.speaker' });
  return { speaker, content: o.content };
}
