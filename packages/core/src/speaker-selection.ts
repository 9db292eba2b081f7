import type { ChatTurn } from './chat-history.js';
import { ConfigError } from './errors.js';

/** What a speaker selection is told besides the history and the participants. */
export interface SpeakerSelectionContext {
  readonly chatId: string;
  /** The number of the turn to give. */
  readonly turn: number;
}

/**
 * Picks who speaks next in a group chat. The moderator asks it once per turn, after the previous
 * turn was stored, and prompts the agent it names (one of `participants`; anything else ends the
 * chat with reason `error`, as does a selection that throws). Derive the choice from the history
 * rather than from state of your own: a moderator that replaces a stopped one asks again for the
 * turn it resumes at.
 */
export interface SpeakerSelector {
  readonly name: string;
  select(
    history: readonly ChatTurn[],
    participants: readonly string[],
    context: SpeakerSelectionContext,
  ): string | Promise<string>;
}

/**
 * Each participant in turn, in the order given: the one after the speaker of the latest turn that
 * a participant spoke, the first one when none has spoken yet (an opening by someone else does not
 * count). Derived from the history, so a resumed chat continues the rotation.
 */
export function roundRobin(): SpeakerSelector {
  return {
    name: 'round-robin',
    select(history, participants) {
      for (let i = history.length - 1; i >= 0; i--) {
        const at = participants.indexOf((history[i] as ChatTurn).speaker);
        if (at >= 0) return participants[(at + 1) % participants.length] as string;
      }
      return participants[0] as string;
    },
  };
}

/**
 * A selection by a function of the history and the participants: a rule (“whoever was addressed
 * last”), or a model asked who should speak next. It may be async; it must return one of
 * `participants`.
 */
export function selector(
  choose: (
    history: readonly ChatTurn[],
    participants: readonly string[],
    context: SpeakerSelectionContext,
  ) => string | Promise<string>,
  name = 'selector',
): SpeakerSelector {
  if (typeof choose !== 'function') throw new ConfigError('a function is required', { path: 'selector' });
  return { name, select: choose };
}
