import { type AgentChange, type Bus, createBus, silentLogger, type Transport } from '@agentbus/core';
import { describe, expect, it } from 'vitest';
import { until } from './wait.js';

export interface AgentConformanceOptions {
  /** Shown in the describe block. */
  readonly name: string;
  /** A new client of the backend under test; every client must see the same store (each bus gets its own, as separate processes would). */
  readonly open: () => Transport;
  readonly skipReason?: string | undefined;
}

let n = 0;
/** Agent ids of their own per test, so that runs and tests never see each other's agents. */
const prefix = () => `ag${process.pid}x${Date.now().toString(36)}x${n++}`;

/**
 * Agents end to end on one transport, each agent on a bus (and client) of its own: inbox messages
 * both ways, one that waits for a stopped agent, a request, workspace broadcast, the directory
 * (discover, a stop, a death).
 */
export function agentConformance(o: AgentConformanceOptions): void {
  describe.skipIf(o.skipReason)(`agents on ${o.name}`, () => {
    const session = () => {
      const buses: Bus[] = [];
      return {
        bus(transport = o.open()): Bus {
          const b = createBus({ transport, logger: silentLogger });
          buses.push(b);
          return b;
        },
        close: () => Promise.all(buses.map((b) => b.close())),
      };
    };

    it('two agents exchange inbox messages, and one sent while the receiver was stopped arrives when it starts again', async () => {
      const p = prefix();
      const s = session();
      try {
        const alice = s.bus().agent(`${p}-alice`);
        const bob = s.bus().agent(`${p}-bob`);
        const aliceGot: string[] = [];
        const bobGot: string[] = [];
        await alice.inbox<string>((d) => {
          aliceGot.push(`${d.envelope.source}:${d.data}`);
        });
        await bob.inbox<string>(async (d) => {
          bobGot.push(`${d.envelope.source}:${d.data}`);
          if (d.data === 'ping') await bob.send(d.envelope.source, 'pong');
          return `${d.data}!`; // the reply, when it is a request
        });
        await alice.start();
        await bob.start();
        await alice.send(bob.id, 'ping');
        await until(() => aliceGot.length === 1, 15_000, 'the pong');
        expect(aliceGot).toEqual([`${bob.id}:pong`]);
        expect(await alice.request(bob.id, 'question', { timeoutMs: 15_000 })).toBe('question!');
        expect(bobGot).toEqual([`${alice.id}:ping`, `${alice.id}:question`]);

        await bob.stop();
        await alice.send(bob.id, 'while you were away');
        const bobAgain = s.bus().agent(`${p}-bob`);
        const laterGot: string[] = [];
        await bobAgain.inbox<string>((d) => {
          laterGot.push(`${d.envelope.source}:${d.data}`);
        });
        await bobAgain.start();
        await until(() => laterGot.length === 1, 15_000, 'the message sent while bob was stopped');
        expect(laterGot).toEqual([`${alice.id}:while you were away`]);
        expect(bobGot).toHaveLength(2);
      } finally {
        await s.close();
      }
    });

    it('a broadcast reaches every listening agent, each through its own group', async () => {
      const p = prefix();
      const s = session();
      try {
        const got = new Map<string, string[]>();
        const listeners = ['alice', 'bob'].map((name) => {
          const agent = s.bus().agent(`${p}-${name}`);
          got.set(agent.id, []);
          return agent;
        });
        for (const agent of listeners) {
          await agent.onBroadcast<string>((d) => {
            got.get(agent.id)?.push(`${d.envelope.source}:${d.data}`);
          });
          await agent.start();
        }
        const [alice, bob] = listeners as [(typeof listeners)[0], (typeof listeners)[0]];
        const coordinator = s.bus().agent(`${p}-coordinator`);
        await coordinator.broadcast('standup');
        await alice.broadcast('notes are in');
        await until(
          () => got.get(alice.id)?.length === 1 && got.get(bob.id)?.length === 2,
          15_000,
          'every copy of the broadcasts',
        );
        expect(got.get(alice.id)).toEqual([`${coordinator.id}:standup`]); // not its own
        expect(new Set(got.get(bob.id))).toEqual(new Set([`${coordinator.id}:standup`, `${alice.id}:notes are in`]));
      } finally {
        await s.close();
      }
    });

    it('the directory lists both agents (learnt at once through discover), drops one that stops at once and one that dies after its heartbeat timeout', async () => {
      const p = prefix();
      const s = session();
      const mine = (ids: string[]) => ids.filter((id) => id.startsWith(`${p}-`));
      try {
        // Heartbeats of a minute: only the discover answers can make the directory see them in time.
        const alice = s
          .bus()
          .agent(
            { id: `${p}-alice`, skills: [{ id: 'search', name: 'Search' }], topics: ['task.research.*'] },
            { heartbeatMs: 60_000 },
          );
        const bob = s
          .bus()
          .agent({ id: `${p}-bob`, skills: [{ id: 'write', name: 'Write' }] }, { heartbeatMs: 60_000 });
        await alice.start();
        await bob.start();
        const directory = s.bus().agents;
        const left: AgentChange[] = [];
        directory.on('leave', (c) => {
          if (c.agent.id.startsWith(`${p}-`)) left.push(c);
        });
        await directory.waitFor(alice.id, { timeoutMs: 15_000 });
        await directory.waitFor(bob.id, { timeoutMs: 15_000 });
        expect(mine((await directory.list()).map((a) => a.id))).toEqual([alice.id, bob.id]);
        expect(mine((await directory.list({ skill: 'write' })).map((a) => a.id))).toEqual([bob.id]);
        expect((await directory.get(alice.id))?.card.topics).toEqual(['task.research.*']);

        await bob.stop();
        await until(() => left.some((c) => c.agent.id === bob.id), 15_000, 'bob to leave');
        expect(mine((await directory.list()).map((a) => a.id))).toEqual([alice.id]);

        // A process that dies: its client goes without a word (no offline announcement, no heartbeats).
        const transport = o.open();
        const carol = s.bus(transport).agent(`${p}-carol`, { heartbeatMs: 200 });
        await carol.start();
        await directory.waitFor(carol.id, { timeoutMs: 15_000 });
        await transport.close();
        await until(() => left.some((c) => c.agent.id === carol.id), 15_000, 'carol to time out');
        expect(left.map((c) => [c.agent.id, c.reason])).toEqual([
          [bob.id, 'offline'],
          [carol.id, 'timeout'],
        ]);
        expect(mine((await directory.list()).map((a) => a.id))).toEqual([alice.id]);
      } finally {
        await s.close();
      }
    });
  });
}
