import { until } from '@agentbus/conformance';
import {
  type Bus,
  type ChatEnd,
  type ChatEvent,
  type ChatParticipant,
  type ChatTurn,
  type ChatTurnContext,
  ClosedError,
  ConfigError,
  chatParticipant,
  createBus,
  type Envelope,
  followChat,
  type GroupChatOptions,
  groupChat,
  memoryEventStore,
  memoryTransport,
  readChat,
  roundRobin,
  selector,
  silentLogger,
  type Transport,
} from '@agentbus/core';
import { afterEach, describe, expect, it } from 'vitest';

type Respond = (history: readonly ChatTurn[], ctx: ChatTurnContext) => string | Promise<string>;

interface Room {
  transport: Transport;
  moderatorBus: Bus;
  store: ReturnType<typeof memoryEventStore>;
  buses: Map<string, Bus>;
  agents: Map<string, ChatParticipant>;
  /** Turn numbers each agent was asked to speak (respond calls). */
  asked: Map<string, number[]>;
  /** Envelopes each agent published (its turns), as they went out. */
  sent: Envelope[];
}

const rooms: Room[] = [];

/** A moderator bus, one bus per agent on the same memory transport, one memory event store. */
async function room(agents: Record<string, Respond>): Promise<Room> {
  const transport = memoryTransport();
  const r: Room = {
    transport,
    moderatorBus: createBus({ transport, ownsTransport: false, logger: silentLogger, source: 'moderator' }),
    store: memoryEventStore({ logger: silentLogger }),
    buses: new Map(),
    agents: new Map(),
    asked: new Map(),
    sent: [],
  };
  rooms.push(r);
  for (const [agentId, respond] of Object.entries(agents)) {
    const bus = createBus({ transport, ownsTransport: false, logger: silentLogger, source: agentId });
    bus.use({
      name: 'capture',
      publish: async (ctx, next) => {
        r.sent.push(ctx.envelope);
        await next();
      },
    });
    r.buses.set(agentId, bus);
    r.asked.set(agentId, []);
    const p = await chatParticipant(bus, {
      agentId,
      respond: (history, ctx) => {
        r.asked.get(agentId)?.push(ctx.turn);
        return respond(history, ctx);
      },
    });
    r.agents.set(agentId, p);
  }
  return r;
}

function chatOptions(r: Room, o: Partial<GroupChatOptions> & Pick<GroupChatOptions, 'id'>): GroupChatOptions {
  return { participants: [...r.agents.keys()], store: r.store, logger: silentLogger, ...o };
}

const say =
  (text: string): Respond =>
  (_h, ctx) =>
    `${ctx.agentId}: ${text} ${ctx.turn}`;

const gates: (() => void)[] = [];

/** A promise a test opens; every gate is opened after each test, so a failed test leaves no handler hanging. */
function gate(): { open: () => void; wait: Promise<void> } {
  let open!: () => void;
  const wait = new Promise<void>((r) => {
    open = r;
  });
  gates.push(open);
  return { open, wait };
}

afterEach(async () => {
  for (const open of gates.splice(0)) open();
  for (const r of rooms.splice(0)) {
    await Promise.all([...r.agents.values()].map((a) => a.close()));
    await Promise.all([r.moderatorBus, ...r.buses.values()].map((b) => b.close()));
    await r.store.close();
    await r.transport.close();
  }
});

describe('group chat', () => {
  it('gives turns round robin across three agents, each seeing the history so far, and ends at max turns', async () => {
    const seen: { agent: string; turns: number[] }[] = [];
    const respond: Respond = (history, ctx) => {
      seen.push({ agent: ctx.agentId, turns: history.map((t) => t.turn) });
      return `${ctx.agentId} says ${ctx.turn}`;
    };
    const r = await room({ alice: respond, bob: respond, carol: respond });
    const ended: ChatEnd[] = [];
    await r.moderatorBus.subscribe<ChatEnd>('chat.rr.ended', (d) => void ended.push(d.data), { group: 'observer' });
    const chat = groupChat(r.moderatorBus, chatOptions(r, { id: 'rr', selectSpeaker: roundRobin(), maxTurns: 8 }));
    await chat.start('Plan a trip to Lisbon');
    const end = await chat.done;

    expect(end).toMatchObject({ chatId: 'rr', reason: 'max-turns', turns: 8 });
    expect(chat.turns.map((t) => [t.turn, t.speaker])).toEqual([
      [1, 'user'],
      [2, 'alice'],
      [3, 'bob'],
      [4, 'carol'],
      [5, 'alice'],
      [6, 'bob'],
      [7, 'carol'],
      [8, 'alice'],
    ]);
    expect(chat.turns[0]?.content).toBe('Plan a trip to Lisbon');
    expect(chat.turns[3]?.content).toBe('carol says 4');
    // Each prompt carried every turn before it.
    expect(seen.map((s) => s.turns.length)).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect(r.asked.get('alice')).toEqual([2, 5, 8]);
    // The stored history is the moderator's, and the end was published for observers.
    expect(await readChat(r.store, 'rr')).toEqual(chat.turns);
    await until(() => ended.length === 1, 5_000, 'the ended event');
    expect(ended[0]).toEqual(end);
    expect(chat.stats).toEqual({ turns: 8, duplicates: 0, rejected: 0 });
  });

  it('lets a selector function pick the next speaker from the history', async () => {
    // Each agent names who should speak next; the selector follows the mention.
    const next: Record<string, string> = { planner: '@critic', critic: '@writer', writer: '@critic' };
    const respond: Respond = (_h, ctx) => `${ctx.agentId} done, over to ${next[ctx.agentId]}`;
    const r = await room({ planner: respond, critic: respond, writer: respond });
    const calls: { turn: number; participants: readonly string[] }[] = [];
    const chat = groupChat(
      r.moderatorBus,
      chatOptions(r, {
        id: 'sel',
        maxTurns: 6,
        selectSpeaker: selector(async (history, participants, ctx) => {
          calls.push({ turn: ctx.turn, participants });
          const last = history[history.length - 1];
          const mention = last?.content.match(/@(\w+)/)?.[1];
          return mention ?? 'planner';
        }),
      }),
    );
    await chat.start();
    const end = await chat.done;
    expect(end.reason).toBe('max-turns');
    expect(chat.turns.map((t) => t.speaker)).toEqual(['planner', 'critic', 'writer', 'critic', 'writer', 'critic']);
    expect(calls.map((c) => c.turn)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(calls[0]?.participants).toEqual(['planner', 'critic', 'writer']);
  });

  it('ends with reason error when the selector names someone who is not a participant', async () => {
    const r = await room({ a: say('hi'), b: say('hi') });
    const chat = groupChat(
      r.moderatorBus,
      chatOptions(r, { id: 'badsel', selectSpeaker: selector((h) => (h.length < 2 ? 'a' : 'mallory')) }),
    );
    await chat.start('go');
    const end = await chat.done;
    expect(end).toMatchObject({ reason: 'error', turns: 2 });
    expect(end.note).toContain('mallory');
    expect(r.asked.get('b')).toEqual([]);
  });

  it('ends on a stop message, not on an opening that mentions it, and prompts nobody after it', async () => {
    const r = await room({
      writer: (_h, ctx) => (ctx.turn >= 4 ? 'Final draft attached. TERMINATE' : `draft ${ctx.turn}`),
      reviewer: (_h, ctx) => `review ${ctx.turn}`,
    });
    const chat = groupChat(r.moderatorBus, chatOptions(r, { id: 'stop', maxTurns: 20, stopWhen: 'TERMINATE' }));
    await chat.start('Write a haiku; say TERMINATE when it is done');
    const end = await chat.done;
    expect(end).toMatchObject({ reason: 'stop-message', turns: 4, note: 'turn 4 by writer' });
    expect(chat.turns.map((t) => t.speaker)).toEqual(['user', 'writer', 'reviewer', 'writer']);
    expect(r.asked.get('reviewer')).toEqual([3]);
  });

  it('stops on a predicate or a RegExp too', async () => {
    const r = await room({ a: say('step'), b: (_h, ctx) => (ctx.chatId === 'regexp' ? 'Approved' : 'no') });
    const byPredicate = groupChat(
      r.moderatorBus,
      chatOptions(r, { id: 'pred', stopWhen: (turn, history) => turn.speaker === 'b' && history.length >= 5 }),
    );
    await byPredicate.start();
    expect(await byPredicate.done).toMatchObject({ reason: 'stop-message', turns: 6 });
    const byRegExp = groupChat(r.moderatorBus, chatOptions(r, { id: 'regexp', stopWhen: /^approved$/i }));
    await byRegExp.start();
    expect(await byRegExp.done).toMatchObject({ reason: 'stop-message', turns: 2 });
  });

  it('stores a redelivered turn once and does not advance the conversation twice', async () => {
    const hold = gate();
    const r = await room({
      a: say('hello'),
      b: async (_h, ctx) => {
        if (ctx.turn === 3) await hold.wait; // keeps the chat at turn 3 while the duplicate arrives
        return `b ${ctx.turn}`;
      },
    });
    const chat = groupChat(r.moderatorBus, chatOptions(r, { id: 'dup', maxTurns: 5 }));
    await chat.start('go');
    await until(() => (r.asked.get('b') ?? []).includes(3), 5_000, 'b asked for turn 3');
    // Turn 2 (a's) delivered again: the very envelope, bytes and all, as a redelivery would be.
    const turn2 = r.sent.find((e) => e.source === 'a' && (e.data as { turn: number }).turn === 2) as Envelope;
    await r.transport.publish([
      {
        id: turn2.id,
        topic: turn2.topic,
        body: r.moderatorBus.codec.encode(turn2),
        headers: { 'content-type': r.moderatorBus.codec.contentType },
        priority: 4,
      },
    ]);
    await until(() => chat.stats.duplicates === 1, 5_000, 'the duplicate to be seen');
    expect(chat.turns).toHaveLength(2);
    hold.open();
    const end = await chat.done;
    expect(end).toMatchObject({ reason: 'max-turns', turns: 5 });
    expect((await readChat(r.store, 'dup')).map((t) => [t.turn, t.speaker, t.id])).toEqual(
      chat.turns.map((t) => [t.turn, t.speaker, t.id]),
    );
    expect(chat.turns.map((t) => t.speaker)).toEqual(['user', 'a', 'b', 'a', 'b']);
    // Nobody was asked twice for a turn: the duplicate did not prompt turn 3 again.
    expect(r.asked.get('a')).toEqual([2, 4]);
    expect(r.asked.get('b')).toEqual([3, 5]);
    expect(chat.stats).toEqual({ turns: 5, duplicates: 1, rejected: 0 });
  });

  it('refuses a turn from an agent whose turn it is not, and a second answer for a turn already stored', async () => {
    const hold = gate();
    const r = await room({
      a: say('x'),
      b: async () => {
        await hold.wait;
        return 'b speaks';
      },
    });
    const chat = groupChat(r.moderatorBus, chatOptions(r, { id: 'order', maxTurns: 3 }));
    await chat.start('go');
    await until(() => chat.turns.length === 2, 5_000, "a's turn");
    const bBus = r.buses.get('b') as Bus;
    // a speaks again out of turn (turn 3 is b's), and answers turn 2 a second time.
    const aBus = r.buses.get('a') as Bus;
    await aBus.publish(
      'chat.order.said',
      { chatId: 'order', turn: 3, speaker: 'a', content: 'me again' },
      { source: 'a' },
    );
    await aBus.publish(
      'chat.order.said',
      { chatId: 'order', turn: 2, speaker: 'a', content: 'again' },
      { source: 'a' },
    );
    // b's turn claimed by someone else's envelope (source is not the speaker).
    await bBus.publish(
      'chat.order.said',
      { chatId: 'order', turn: 3, speaker: 'b', content: 'forged' },
      { source: 'a' },
    );
    await until(() => chat.stats.rejected === 3, 5_000, 'three refusals');
    hold.open();
    await chat.done;
    expect(chat.turns.map((t) => [t.speaker, t.content])).toEqual([
      ['user', 'go'],
      ['a', 'a: x 2'],
      ['b', 'b speaks'],
    ]);
  });

  it('reads the history from the start and from a turn, and follows it live to the end', async () => {
    const hold = gate();
    const r = await room({
      a: say('a'),
      b: async (_h, ctx) => {
        if (ctx.turn === 5) await hold.wait;
        return `b ${ctx.turn}`;
      },
    });
    const followed: ChatEvent[] = [];
    const following = (async () => {
      for await (const e of followChat(r.store, 'hist')) followed.push(e);
    })();
    const chat = groupChat(r.moderatorBus, chatOptions(r, { id: 'hist', maxTurns: 6 }));
    await chat.start('topic');
    await until(() => chat.turns.length === 4, 5_000, 'four turns');
    expect((await readChat(r.store, 'hist')).map((t) => t.turn)).toEqual([1, 2, 3, 4]);
    expect((await readChat(r.store, 'hist', { fromTurn: 3 })).map((t) => [t.turn, t.speaker])).toEqual([
      [3, 'b'],
      [4, 'a'],
    ]);
    const fromChat: number[] = [];
    for await (const t of chat.history({ fromTurn: 2, limit: 2 })) fromChat.push(t.turn);
    expect(fromChat).toEqual([2, 3]);
    // A follower that joins mid-conversation from turn 3 gets 3, 4, then the rest live.
    const late: ChatEvent[] = [];
    const lateFollowing = (async () => {
      for await (const e of followChat(r.store, 'hist', { fromTurn: 3 })) late.push(e);
    })();
    await until(() => late.length === 2 && followed.length === 4, 5_000, 'followers caught up');
    hold.open();
    const end = await chat.done;
    await Promise.all([following, lateFollowing]);
    expect(followed.map((e) => (e.kind === 'turn' ? e.turn : e.kind))).toEqual([1, 2, 3, 4, 5, 6, 'ended']);
    expect(late.map((e) => (e.kind === 'turn' ? e.turn : e.kind))).toEqual([3, 4, 5, 6, 'ended']);
    expect(followed.at(-1)).toEqual({ kind: 'ended', ...end });
    // A chat that ended before the turn asked for yields nothing and finishes.
    const after: ChatEvent[] = [];
    for await (const e of followChat(r.store, 'hist', { fromTurn: 9 })) after.push(e);
    expect(after).toEqual([]);
  });

  it('ends when end() is called, and refuses the turn that comes after', async () => {
    const hold = gate();
    const r = await room({
      a: say('x'),
      b: async () => {
        await hold.wait;
        return 'too late';
      },
    });
    const chat = groupChat(r.moderatorBus, chatOptions(r, { id: 'end' }));
    await chat.start('go');
    await until(() => r.asked.get('b')?.length === 1, 5_000, 'b asked');
    const end = await chat.end('the user closed the window');
    expect(end).toMatchObject({ reason: 'ended', turns: 2, note: 'the user closed the window' });
    expect(await chat.done).toEqual(end);
    hold.open();
    await until(() => chat.stats.rejected === 1, 5_000, "b's late turn refused");
    expect(await readChat(r.store, 'end')).toHaveLength(2);
    expect(await chat.end()).toEqual(end); // ending again changes nothing
  });

  it('ends with turn-timeout when the speaker does not answer in time', async () => {
    const hold = gate();
    const r = await room({
      a: say('x'),
      b: async () => {
        await hold.wait;
        return 'finally';
      },
    });
    const chat = groupChat(r.moderatorBus, chatOptions(r, { id: 'slow', turnTimeoutMs: 200 }));
    await chat.start('go');
    const end = await chat.done;
    expect(end).toMatchObject({ reason: 'turn-timeout', turns: 2 });
    expect(end.note).toContain('b did not speak turn 3');
    hold.open();
  });

  it('resumes in a new moderator from the stored history, the old one closed mid-turn', async () => {
    const hold = gate();
    const r = await room({
      a: say('a'),
      b: async (_h, ctx) => {
        if (ctx.turn === 3) await hold.wait;
        return `b ${ctx.turn}`;
      },
    });
    const first = groupChat(r.moderatorBus, chatOptions(r, { id: 'resume', maxTurns: 5 }));
    await first.start('go');
    await until(() => r.asked.get('b')?.length === 1, 5_000, 'b asked for turn 3');
    await first.close();
    await expect(first.done).rejects.toMatchObject({ code: 'CLOSED' });
    hold.open();
    await until(() => r.agents.get('b')?.answered === 1, 5_000, "b's answer, waiting for a moderator");
    const second = groupChat(r.moderatorBus, chatOptions(r, { id: 'resume', maxTurns: 5 }));
    await second.start('go'); // the opening is not said again: the chat has turns
    const end = await second.done;
    expect(end).toMatchObject({ reason: 'max-turns', turns: 5 });
    expect(second.turns.map((t) => t.speaker)).toEqual(['user', 'a', 'b', 'a', 'b']);
    expect(r.asked.get('b')).toEqual([3, 5]); // asked again for 3 by the new moderator: skipped
    expect(r.agents.get('b')?.skipped).toBe(1);
    // A moderator of a chat that has ended resolves at once.
    const third = groupChat(r.moderatorBus, chatOptions(r, { id: 'resume', maxTurns: 5 }));
    await third.start();
    expect(await third.done).toEqual(end);
    await third.close();
  });

  it('ends with reason error when a prompt can never be sent, and promptHistory keeps prompts small', async () => {
    const long: Respond = (_h, ctx) => `${ctx.agentId} ${'x'.repeat(300)}`;
    const r = await room({ a: long, b: long });
    const small = createBus({
      transport: r.transport,
      ownsTransport: false,
      logger: silentLogger,
      maxPayloadBytes: 2_000,
    });
    r.buses.set('small-moderator', small);
    const all = groupChat(small, chatOptions(r, { id: 'big', maxTurns: 12 }));
    await all.start('go');
    const end = await all.done;
    expect(end.reason).toBe('error');
    expect(end.note).toContain('PAYLOAD_TOO_LARGE');
    expect(end.turns).toBeGreaterThan(2);
    expect(end.turns).toBeLessThan(12);
    const recent = groupChat(small, chatOptions(r, { id: 'recent', maxTurns: 12, promptHistory: 2 }));
    await recent.start('go');
    expect(await recent.done).toMatchObject({ reason: 'max-turns', turns: 12 });
    expect(r.asked.get('a')?.length).toBeGreaterThan(0);
  });

  it('stores each turn once with two moderators running at once on one store', async () => {
    const r = await room({ a: say('a'), b: say('b'), c: say('c') });
    const otherBus = createBus({ transport: r.transport, ownsTransport: false, logger: silentLogger });
    r.buses.set('other-moderator', otherBus);
    const one = groupChat(r.moderatorBus, chatOptions(r, { id: 'twice', maxTurns: 9 }));
    const two = groupChat(otherBus, chatOptions(r, { id: 'twice', maxTurns: 9 }));
    // Both open it: two openings race for turn 1, and both prompt. The one that stores the end
    // announces it; the other learns of it with the next turn it gets, if any.
    await Promise.all([one.start('go'), two.start('go')]);
    const end = await Promise.race([one.done, two.done]);
    expect(end).toMatchObject({ reason: 'max-turns', turns: 9 });
    const stored = await readChat(r.store, 'twice');
    expect(stored.map((t) => t.speaker)).toEqual(['user', 'a', 'b', 'c', 'a', 'b', 'c', 'a', 'b']);
    expect(new Set(stored.map((t) => t.id)).size).toBe(9);
    expect(await r.store.version('chat-twice')).toBe(10); // nine turns and one end
    // The second opening, at least, was refused.
    expect(one.stats.rejected + two.stats.rejected).toBeGreaterThanOrEqual(1);
    await Promise.all([one.close(), two.close()]);
  });

  it('does not start once closed: start() and done reject with ClosedError', async () => {
    const r = await room({ a: say('x') });
    const chat = groupChat(r.moderatorBus, chatOptions(r, { id: 'closed' }));
    const starting = chat.start('go');
    await chat.close();
    await expect(starting).rejects.toBeInstanceOf(ClosedError);
    await expect(chat.done).rejects.toBeInstanceOf(ClosedError);
    await expect(chat.start()).rejects.toBeInstanceOf(ClosedError);
    expect(await r.store.version('chat-closed')).toBe(0);
    expect(r.asked.get('a')).toEqual([]);
  });

  it('refuses invalid options with a ConfigError naming the field', () => {
    const bus = createBus({ transport: memoryTransport(), logger: silentLogger });
    const store = memoryEventStore();
    const base = { id: 'c', participants: ['a'], store };
    const path = (f: () => unknown) => {
      try {
        f();
      } catch (err) {
        expect(err).toBeInstanceOf(ConfigError);
        return (err as ConfigError).path;
      }
      return undefined;
    };
    expect(path(() => groupChat(bus, { ...base, id: 'a.b' }))).toBe('id');
    expect(path(() => groupChat(bus, { ...base, participants: [] }))).toBe('participants');
    expect(path(() => groupChat(bus, { ...base, participants: ['a', 'a'] }))).toBe('participants');
    expect(path(() => groupChat(bus, { ...base, participants: ['a', 'b c'] }))).toBe('participants[1]');
    expect(path(() => groupChat(bus, { ...base, maxTurns: 0 }))).toBe('maxTurns');
    expect(path(() => groupChat(bus, { ...base, stopWhen: '' }))).toBe('stopWhen');
    expect(path(() => groupChat(bus, { ...base, turnTimeoutMs: -1 }))).toBe('turnTimeoutMs');
    expect(path(() => groupChat(bus, { ...base, ackTimeoutMs: 0 }))).toBe('ackTimeoutMs');
    expect(path(() => groupChat(bus, { ...base, promptHistory: 0 }))).toBe('promptHistory');
    expect(path(() => groupChat(bus, { ...base, store: undefined as never }))).toBe('store');
    expect(path(() => groupChat(bus, { ...base, topicPrefix: 'a..b' }))).toBe('topicPrefix');
    void bus.close();
  });
});
