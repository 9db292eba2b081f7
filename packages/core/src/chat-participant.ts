import type { BackoffOptions } from './backoff.js';
import type { Bus, BusSubscription } from './bus.js';
import {
  CHAT_ENVELOPE_TYPES,
  type ChatPrompt,
  type ChatSaid,
  type ChatTurn,
  chatPrefix,
  chatSegment,
  parsePrompt,
} from './chat-history.js';
import type { Delivery } from './delivery.js';
import { ConfigError, ValidationError } from './errors.js';
import { positiveInteger } from './validate.js';

/** What a participant's `respond` is told besides the history. */
export interface ChatTurnContext {
  readonly chatId: string;
  /** This agent. */
  readonly agentId: string;
  /** The number of the turn it is asked to speak. */
  readonly turn: number;
  readonly participants: readonly string[];
  /** Aborted when the handler should stop (a handler timeout, the subscription closing …). */
  readonly signal: AbortSignal;
  readonly delivery: Delivery<ChatPrompt>;
}

export interface ChatParticipantOptions {
  /** The agent's id in the chats' `participants` (one topic segment). */
  readonly agentId: string;
  /**
   * The agent's turn: what it says, given the conversation so far. Throwing retries the turn with
   * the subscription's backoff (the moderator waits; see its `turnTimeoutMs`); after `maxAttempts`
   * the prompt is dead-lettered.
   */
  readonly respond: (history: readonly ChatTurn[], context: ChatTurnContext) => string | Promise<string>;
  /** Take part in this chat only (default: every chat whose moderator names this agent). */
  readonly chatId?: string;
  /** Must match the moderators' (default `chat`). */
  readonly topicPrefix?: string;
  /**
   * Consumer group (default: the pattern, `<prefix>.<chatId or *>.turn.<agentId>`): processes of
   * one agent in one group share its turns, each turn going to one of them.
   */
  readonly group?: string;
  /** Turns answered at once, of different chats (default 1). */
  readonly concurrency?: number;
  readonly maxAttempts?: number;
  readonly ackTimeoutMs?: number;
  readonly backoff?: Partial<BackoffOptions>;
}

export const CHAT_PARTICIPANT_DEFAULTS = Object.freeze({ topicPrefix: 'chat', concurrency: 1 });

/** Chats whose last answered turn a participant remembers, at most (the least recently used go first). */
const REMEMBERED_CHATS = 10_000;

/** A running participant (see {@link chatParticipant}). */
export interface ChatParticipant extends AsyncDisposable {
  readonly agentId: string;
  readonly pattern: string;
  readonly group: string;
  /** Turns this process said. */
  readonly answered: number;
  /** Prompts it skipped: for a turn it had said already or was saying (a moderator that resumed asks again). */
  readonly skipped: number;
  /** Stops taking turns; waits for the one being said. */
  close(): Promise<void>;
}

/**
 * Joins group chats as `agentId`: for each prompt (“your turn”) on `<prefix>.<chatId>.turn.<agentId>`,
 * runs `respond` with the history the prompt carries and publishes the result as the turn on the
 * prompt's `replyto` — with `source` = the agent, `workflowid` = the chat id, `sequence` = the turn
 * number, `causationid` = the prompt. A prompt for a turn this process already said, or is saying,
 * is skipped, so a moderator that resumed and asks again does not cost a second model call; a
 * second answer for one turn that still gets through (another process of the agent) is refused by
 * the moderator, never stored twice.
 */
export async function chatParticipant(bus: Bus, options: ChatParticipantOptions): Promise<ChatParticipant> {
  const agentId = chatSegment(options?.agentId, 'agentId');
  const { respond } = options;
  if (typeof respond !== 'function') throw new ConfigError('a respond function is required', { path: 'respond' });
  const prefix = chatPrefix(options.topicPrefix ?? CHAT_PARTICIPANT_DEFAULTS.topicPrefix, 'topicPrefix');
  const chat = options.chatId === undefined ? '*' : chatSegment(options.chatId, 'chatId');
  const concurrency = positiveInteger(options.concurrency ?? CHAT_PARTICIPANT_DEFAULTS.concurrency, 'concurrency');
  const pattern = `${prefix}.${chat}.turn.${agentId}`;
  const group = options.group ?? pattern;
  // Highest turn said per chat, in least-recently-used order; and the turns being said now.
  const said = new Map<string, number>();
  const saying = new Set<string>();
  let answered = 0;
  let skipped = 0;

  const handle = async (d: Delivery<ChatPrompt>): Promise<void> => {
    const prompt = parsePrompt(d.envelope);
    if (prompt.speaker !== agentId) {
      throw new ValidationError(`prompt ${d.envelope.id} asks ${prompt.speaker}, not ${agentId}`);
    }
    const key = `${prompt.chatId}\u0000${prompt.turn}`;
    if (prompt.turn <= (said.get(prompt.chatId) ?? 0) || saying.has(key)) {
      skipped++;
      return;
    }
    saying.add(key);
    try {
      const content = await respond(prompt.history, {
        chatId: prompt.chatId,
        agentId,
        turn: prompt.turn,
        participants: prompt.participants,
        signal: d.signal,
        delivery: d,
      });
      if (typeof content !== 'string') {
        throw new ValidationError(`respond of ${agentId} returned ${typeof content}, not a string`);
      }
      const turn: ChatSaid = { chatId: prompt.chatId, turn: prompt.turn, speaker: agentId, content };
      await bus.publish(d.envelope.replyto as string, turn, {
        type: CHAT_ENVELOPE_TYPES.said,
        source: agentId,
        workflowid: prompt.chatId,
        sequence: prompt.turn,
        causationid: d.envelope.id,
      });
      said.delete(prompt.chatId);
      said.set(prompt.chatId, prompt.turn);
      if (said.size > REMEMBERED_CHATS) said.delete(said.keys().next().value as string);
      answered++;
    } finally {
      saying.delete(key);
    }
  };

  const sub: BusSubscription = await bus.subscribe<ChatPrompt>(pattern, handle, {
    group,
    concurrency,
    ...(options.maxAttempts === undefined ? {} : { maxAttempts: options.maxAttempts }),
    ...(options.ackTimeoutMs === undefined ? {} : { ackTimeoutMs: options.ackTimeoutMs }),
    ...(options.backoff === undefined ? {} : { backoff: options.backoff }),
  });
  return {
    agentId,
    pattern,
    group,
    get answered() {
      return answered;
    },
    get skipped() {
      return skipped;
    },
    close: () => sub.close(),
    [Symbol.asyncDispose]: () => sub.close(),
  };
}
