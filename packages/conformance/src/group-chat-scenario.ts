import {
  type Bus,
  type ChatEnd,
  type ChatParticipant,
  type ChatSaid,
  chatParticipant,
  createBus,
  type EventStore,
  groupChat,
  memoryEventStore,
  readChat,
  silentLogger,
  type Transport,
} from '@agentbus/core';
import { afterEach, describe, expect, it } from 'vitest';
import { until } from './wait.js';

export interface GroupChatConformanceOptions {
  readonly name: string;
  /** A new client of the backend under test (the moderator and each agent get their own). */
  readonly open: () => Transport;
  /**
   * A new client of one event store shared by every call (another connection to the same file or
   * server), so that a replacement moderator reads what the first one stored. Default: one
   * in-process memory store per test.
   */
  readonly openStore?: () => EventStore;
  readonly skipReason?: string | undefined;
}

let n = 0;
const uniqueChat = () => `gc${process.pid}x${Date.now().toString(36)}x${n++}`;

/** Group chat end to end on one transport: the moderator, each agent and an observer on separate clients. */
export function groupChatConformance(o: GroupChatConformanceOptions): void {
  describe.skipIf(o.skipReason)(`group chat on ${o.name}`, () => {
    const buses: Bus[] = [];
    const agents: ChatParticipant[] = [];
    const stores: EventStore[] = [];
    const gates: (() => void)[] = [];
    let memory: EventStore | undefined;

    const bus = (source: string) => {
      const b = createBus({ transport: o.open(), logger: silentLogger, source });
      buses.push(b);
      return b;
    };
    const store = () => {
      if (!o.openStore) memory ??= memoryEventStore({ logger: silentLogger });
      const s = o.openStore ? o.openStore() : (memory as EventStore);
      stores.push(s);
      return s;
    };
    /** Each agent on a client of its own; `asked` records the turns it was asked to speak. */
    const join = async (
      ids: readonly string[],
      respond: (agentId: string, turn: number) => string | Promise<string> = (a, t) => `${a} says ${t}`,
    ) => {
      const asked = new Map<string, number[]>(ids.map((id) => [id, []]));
      const joined = new Map<string, ChatParticipant>();
      for (const agentId of ids) {
        const p = await chatParticipant(bus(agentId), {
          agentId,
          respond: (_history, ctx) => {
            asked.get(agentId)?.push(ctx.turn);
            return respond(agentId, ctx.turn);
          },
        });
        agents.push(p);
        joined.set(agentId, p);
      }
      return { asked, joined };
    };
    const gate = () => {
      let open!: () => void;
      const wait = new Promise<void>((r) => {
        open = r;
      });
      gates.push(open);
      return { open, wait };
    };

    afterEach(async () => {
      for (const open of gates.splice(0)) open();
      await Promise.all(agents.splice(0).map((a) => a.close()));
      await Promise.all(buses.splice(0).map((b) => b.close()));
      await Promise.all(stores.splice(0).map((s) => s.close()));
      memory = undefined;
    });

    it('runs a round-robin chat among agents on separate clients to max turns and announces the end', async () => {
      const id = uniqueChat();
      const { asked } = await join(['alice', 'bob', 'carol']);
      const ended: ChatEnd[] = [];
      await bus('observer').subscribe<ChatEnd>(`chat.${id}.ended`, (d) => void ended.push(d.data), {
        group: `${id}-observer`,
      });
      const s = store();
      const chat = groupChat(bus('moderator'), {
        id,
        participants: ['alice', 'bob', 'carol'],
        store: s,
        maxTurns: 7,
        logger: silentLogger,
      });
      await chat.start('Plan the release');
      const end = await chat.done;
      expect(end).toMatchObject({ reason: 'max-turns', turns: 7 });
      const history = await readChat(s, id);
      expect(history.map((t) => [t.turn, t.speaker])).toEqual([
        [1, 'user'],
        [2, 'alice'],
        [3, 'bob'],
        [4, 'carol'],
        [5, 'alice'],
        [6, 'bob'],
        [7, 'carol'],
      ]);
      expect(history[2]?.content).toBe('bob says 3');
      expect([...asked.values()]).toEqual([
        [2, 5],
        [3, 6],
        [4, 7],
      ]);
      await until(() => ended.length === 1, 15_000, 'the ended event on the observer');
      expect(ended[0]).toEqual(end);
    });

    it('ends on a stop message', async () => {
      const id = uniqueChat();
      const { asked } = await join(['writer', 'critic'], (agent, turn) =>
        agent === 'critic' && turn >= 4 ? 'Looks good. TERMINATE' : `${agent} ${turn}`,
      );
      const chat = groupChat(bus('moderator'), {
        id,
        participants: ['writer', 'critic'],
        store: store(),
        stopWhen: 'TERMINATE',
        logger: silentLogger,
      });
      await chat.start('Draft a tagline; reply TERMINATE when done');
      expect(await chat.done).toMatchObject({ reason: 'stop-message', turns: 5, note: 'turn 5 by critic' });
      expect(asked.get('writer')).toEqual([2, 4]);
    });

    it('stores a turn redelivered after a lost ack once, without advancing the chat twice', async () => {
      const id = uniqueChat();
      const { asked } = await join(['a', 'b']);
      const moderatorBus = bus('moderator');
      let lost = 0;
      // The moderator stores turn 3, then its ack is "lost": the transport redelivers the turn.
      moderatorBus.use({
        name: 'lose-one-ack',
        async consume(ctx, next) {
          await next();
          if ((ctx.envelope.data as ChatSaid).turn === 3 && lost++ === 0) throw new Error('ack lost');
        },
      });
      const chat = groupChat(moderatorBus, {
        id,
        participants: ['a', 'b'],
        store: store(),
        maxTurns: 6,
        logger: silentLogger,
      });
      await chat.start('go');
      expect(await chat.done).toMatchObject({ reason: 'max-turns', turns: 6 });
      await until(() => chat.stats.duplicates === 1, 15_000, 'the redelivered turn');
      expect(lost).toBeGreaterThanOrEqual(2); // the redelivery came through the middleware again
      expect(chat.turns.map((t) => t.speaker)).toEqual(['user', 'a', 'b', 'a', 'b', 'a']);
      expect(asked.get('a')).toEqual([2, 4, 6]);
      expect(asked.get('b')).toEqual([3, 5]);
    });

    it('resumes in a new moderator on another client from the stored history', async () => {
      const id = uniqueChat();
      const hold = gate();
      const { asked, joined } = await join(['a', 'b', 'c'], async (agent, turn) => {
        if (turn === 4) await hold.wait; // c is saying turn 4 when the first moderator stops
        return `${agent} ${turn}`;
      });
      const options = { id, participants: ['a', 'b', 'c'], maxTurns: 8, logger: silentLogger };
      const first = groupChat(bus('moderator-1'), { ...options, store: store() });
      await first.start('go');
      await until(() => asked.get('c')?.includes(4) === true, 15_000, 'c asked for turn 4');
      await first.close();
      hold.open();
      // c's turn goes to the moderators' durable group and waits there for the next moderator.
      await until(() => joined.get('c')?.answered === 1, 15_000, "c's turn 4 published");
      const second = groupChat(bus('moderator-2'), { ...options, store: store() });
      await second.start('go');
      const end = await second.done;
      expect(end).toMatchObject({ reason: 'max-turns', turns: 8 });
      expect(second.turns.map((t) => t.speaker)).toEqual(['user', 'a', 'b', 'c', 'a', 'b', 'c', 'a']);
      expect(second.turns[3]?.content).toBe('c 4');
      // Asked again for turn 4 by the new moderator, c skipped it: one model call per turn.
      expect(asked.get('c')).toEqual([4, 7]);
      expect(asked.get('a')).toEqual([2, 5, 8]);
      expect(second.stats.duplicates + second.stats.rejected).toBe(0);
    });
  });
}
