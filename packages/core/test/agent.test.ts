import { until } from '@agentbus/conformance';
import {
  type AgentChange,
  AgentDirectory,
  type AgentPresence,
  AgentTopics,
  ConfigError,
  createBus,
  HandlerError,
  ManualClock,
  memoryTransport,
  NoRespondersError,
  silentLogger,
  TimeoutError,
  ValidationError,
} from '@agentbus/core';
import { describe, expect, it } from 'vitest';

/** A memory transport shared by several buses (as processes would share a server). */
function workspace(clock = new ManualClock(Date.now())) {
  const transport = memoryTransport();
  const buses: ReturnType<typeof createBus>[] = [];
  const bus = (source?: string) => {
    const b = createBus({
      transport,
      ownsTransport: false,
      clock,
      logger: silentLogger,
      ...(source ? { source } : {}),
    });
    buses.push(b);
    return b;
  };
  const close = async () => {
    await Promise.all(buses.map((b) => b.close()));
    await transport.close();
  };
  return { transport, clock, bus, close };
}

const ids = (list: { id: string }[]) => list.map((a) => a.id);

describe('agents on memory', () => {
  it('delivers a message sent while the receiver was stopped once it starts again, with the sender as source', async () => {
    const ws = workspace();
    try {
      const received: { from: string; data: unknown }[] = [];
      const alice = ws.bus().agent('alice');
      const bob = ws.bus().agent('bob');
      await bob.inbox((d) => {
        received.push({ from: d.envelope.source, data: d.data });
      });
      await bob.start();
      await alice.send('bob', { text: 'hello' });
      await until(() => received.length === 1, 5_000, 'the first message');
      await bob.stop();
      expect(bob.running).toBe(false);
      await alice.send('bob', { text: 'while you were away' });
      expect(received).toHaveLength(1);
      await bob.start();
      await until(() => received.length === 2, 5_000, 'the message sent while bob was stopped');
      expect(received).toEqual([
        { from: 'alice', data: { text: 'hello' } },
        { from: 'alice', data: { text: 'while you were away' } },
      ]);
    } finally {
      await ws.close();
    }
  });

  it("answers a request with the inbox handler's result, and its error as the same class", async () => {
    const ws = workspace();
    try {
      const alice = ws.bus().agent('alice');
      const bob = ws.bus().agent('bob');
      await bob.inbox<{ a: number; b: number }>((d) => {
        if (d.data.a < 0) throw new ValidationError('a must be >= 0');
        if (d.data.a === 0) throw new Error('tool crashed');
        return { sum: d.data.a + d.data.b, asker: d.envelope.source };
      });
      await bob.start();
      expect(await alice.request('bob', { a: 2, b: 3 }, { timeoutMs: 5_000 })).toEqual({ sum: 5, asker: 'alice' });
      await expect(alice.request('bob', { a: -1, b: 0 }, { timeoutMs: 5_000 })).rejects.toBeInstanceOf(ValidationError);
      await expect(alice.request('bob', { a: 0, b: 0 }, { timeoutMs: 5_000 })).rejects.toBeInstanceOf(HandlerError);
      await bob.stop();
      // Its inbox group still exists: the request waits (and expires) there.
      await expect(alice.request('bob', { a: 1, b: 1 }, { timeoutMs: 100 })).rejects.toBeInstanceOf(TimeoutError);
      // An agent that never opened its inbox: nobody would ever get it (the memory transport can tell).
      await expect(alice.request('nobody', {}, { timeoutMs: 5_000 })).rejects.toBeInstanceOf(NoRespondersError);
    } finally {
      await ws.close();
    }
  });

  it('gives every listening agent its own copy of a broadcast, and an agent its own only with includeOwn', async () => {
    const ws = workspace();
    try {
      const got = new Map<string, string[]>([
        ['alice', []],
        ['bob', []],
        ['carol', []],
      ]);
      const coordinator = ws.bus().agent('coordinator');
      const agents = ['alice', 'bob', 'carol'].map((id) => ws.bus().agent(id));
      const [alice, bob, carol] = agents as [(typeof agents)[0], (typeof agents)[0], (typeof agents)[0]];
      await alice.onBroadcast<string>((d) => void got.get('alice')?.push(`${d.envelope.source}:${d.data}`));
      await bob.onBroadcast<string>((d) => void got.get('bob')?.push(`${d.envelope.source}:${d.data}`));
      await carol.onBroadcast<string>((d) => void got.get('carol')?.push(`${d.envelope.source}:${d.data}`), {
        includeOwn: true,
      });
      await Promise.all(agents.map((a) => a.start()));
      await coordinator.broadcast('standup');
      await alice.broadcast('from alice');
      await carol.broadcast('from carol');
      await until(() => got.get('bob')?.length === 3 && got.get('carol')?.length === 3, 5_000, 'the broadcasts');
      await until(() => got.get('alice')?.length === 2, 5_000, "alice's copies");
      expect(got.get('alice')).toEqual(['coordinator:standup', 'carol:from carol']);
      expect(got.get('bob')).toEqual(['coordinator:standup', 'alice:from alice', 'carol:from carol']);
      expect(got.get('carol')).toEqual(['coordinator:standup', 'alice:from alice', 'carol:from carol']);
    } finally {
      await ws.close();
    }
  });

  it('lists running agents with their cards, filtered by skill, tag and topic served', async () => {
    const ws = workspace();
    try {
      const bus = ws.bus();
      const researcher = bus.agent({
        id: 'researcher',
        description: 'finds sources',
        version: '1.2.0',
        skills: [{ id: 'search', name: 'Web search', tags: ['web'] }],
        topics: ['task.research.*'],
        metadata: { model: 'small' },
      });
      const writer = bus.agent({ id: 'writer', skills: [{ id: 'write', name: 'Write', tags: ['text'] }] });
      const idle = bus.agent('idle');
      await researcher.start();
      await writer.start();
      const directory = ws.bus().agents;
      await directory.waitFor('researcher', { timeoutMs: 5_000 });
      await directory.waitFor('writer', { timeoutMs: 5_000 });
      expect(ids(await directory.list())).toEqual(['researcher', 'writer']); // idle never started
      expect(idle.running).toBe(false);
      const r = await directory.get('researcher');
      expect(r).toMatchObject({ id: 'researcher', instances: 1, lastSeenMs: ws.clock.now() });
      expect(r?.card).toEqual({
        id: 'researcher',
        name: 'researcher',
        description: 'finds sources',
        version: '1.2.0',
        skills: [{ id: 'search', name: 'Web search', tags: ['web'] }],
        topics: ['task.research.*'],
        metadata: { model: 'small' },
      });
      expect(ids(await directory.list({ skill: 'write' }))).toEqual(['writer']);
      expect(ids(await directory.list({ tag: 'web' }))).toEqual(['researcher']);
      expect(ids(await directory.list({ topic: 'task.research.papers' }))).toEqual(['researcher']);
      expect(ids(await directory.list({ topic: 'task.write.essay' }))).toEqual([]);
      expect(await directory.get('idle')).toBeUndefined();
    } finally {
      await ws.close();
    }
  });

  it('drops a stopped agent at once with a leave event (offline), and lists it again when it restarts', async () => {
    const ws = workspace();
    try {
      const bob = ws.bus().agent('bob', { heartbeatMs: 60_000 });
      const directory = ws.bus().agents;
      await directory.start();
      const changes: AgentChange[] = [];
      directory.on('join', (c) => changes.push(c));
      directory.on('leave', (c) => changes.push(c));
      await bob.start();
      await until(() => changes.length === 1, 5_000, 'bob to join');
      await bob.stop();
      await until(() => changes.length === 2, 5_000, 'bob to leave');
      expect(await directory.list()).toEqual([]);
      expect(changes.map((c) => [c.type, c.agent.id, c.reason])).toEqual([
        ['join', 'bob', undefined],
        ['leave', 'bob', 'offline'],
      ]);
      await bob.start();
      await directory.waitFor('bob', { timeoutMs: 5_000 });
      expect(changes.map((c) => c.type)).toEqual(['join', 'leave', 'join']);
    } finally {
      await ws.close();
    }
  });

  it('drops an agent that went silent once its heartbeat timeout passed on the bus clock, and lists it again when it announces', async () => {
    const ws = workspace();
    try {
      // A heartbeat of a minute: no heartbeat fires during the test, as if the agent had died.
      const bob = ws.bus().agent('bob', { heartbeatMs: 60_000 });
      expect(bob.heartbeatTimeoutMs).toBe(180_000);
      const directory = ws.bus().agents;
      const left: AgentChange[] = [];
      directory.on('leave', (c) => left.push(c));
      await bob.start();
      await directory.waitFor('bob', { timeoutMs: 5_000 });
      ws.clock.advance(180_000);
      expect(ids(await directory.list())).toEqual(['bob']); // seen within the timeout
      ws.clock.advance(1);
      expect(await directory.list()).toEqual([]);
      expect(left.map((c) => [c.type, c.agent.id, c.agent.instances, c.reason])).toEqual([
        ['leave', 'bob', 0, 'timeout'],
      ]);
      await bob.announce();
      await directory.waitFor('bob', { timeoutMs: 5_000 });
      expect((await directory.get('bob'))?.lastSeenMs).toBe(ws.clock.now());
    } finally {
      await ws.close();
    }
  });

  it('keeps an agent listed past its timeout while its heartbeats arrive, and the sweep reports it once they stop', async () => {
    const ws = workspace();
    try {
      const bus = ws.bus();
      const directory = new AgentDirectory(ws.bus(), { sweepIntervalMs: 5 });
      const left: AgentChange[] = [];
      directory.on('leave', (c) => left.push(c));
      await directory.start();
      const bob = bus.agent('bob', { heartbeatMs: 10, heartbeatTimeoutMs: 1_000 });
      await bob.start();
      await directory.waitFor('bob', { timeoutMs: 5_000 });
      for (let i = 0; i < 3; i++) {
        ws.clock.advance(900);
        const now = ws.clock.now();
        await until(async () => (await directory.get('bob'))?.lastSeenMs === now, 5_000, 'a heartbeat');
      }
      expect(left).toEqual([]);
      // Killed without a word: its transport goes, so no offline announcement and no heartbeats.
      const dead = workspace(ws.clock);
      const ghost = dead.bus().agent('ghost', { heartbeatMs: 60_000 });
      const ghostDirectory = new AgentDirectory(dead.bus(), { sweepIntervalMs: 5 });
      await ghost.start();
      await ghostDirectory.waitFor('ghost', { timeoutMs: 5_000 });
      await dead.transport.close();
      ws.clock.advance(180_001);
      // The background sweep (every 5 ms) reports it without a list() call.
      let ghostLeft: AgentChange | undefined;
      ghostDirectory.on('leave', (c) => {
        ghostLeft = c;
      });
      await until(() => ghostLeft !== undefined, 5_000, 'the sweep to report the silent agent');
      expect(ghostLeft).toMatchObject({ type: 'leave', agent: { id: 'ghost' }, reason: 'timeout' });
      await dead.close();
    } finally {
      await ws.close();
    }
  });

  it('learns of agents already online at once through discover (unless they are not discoverable)', async () => {
    const ws = workspace();
    try {
      const alice = ws.bus().agent('alice', { heartbeatMs: 60_000 });
      const shy = ws.bus().agent('shy', { heartbeatMs: 60_000, discoverable: false });
      await alice.start();
      await shy.start();
      const late = ws.bus().agents; // a directory that starts after both announced
      await late.waitFor('alice', { timeoutMs: 5_000 });
      expect(ids(await late.list())).toEqual(['alice']); // shy shows up at its next heartbeat
      await shy.announce();
      await late.waitFor('shy', { timeoutMs: 5_000 });
      expect(ids(await late.list())).toEqual(['alice', 'shy']);
    } finally {
      await ws.close();
    }
  });

  it('treats running copies of one agent as one agent with several instances sharing its inbox', async () => {
    const ws = workspace();
    try {
      const handledBy: string[] = [];
      const copies = ['a', 'b'].map((copy) => {
        const agent = ws.bus().agent('worker', { heartbeatMs: 60_000 });
        void agent.inbox(() => {
          handledBy.push(copy);
        });
        return agent;
      });
      const [one, two] = copies as [(typeof copies)[0], (typeof copies)[0]];
      const directory = ws.bus().agents;
      const changes: AgentChange[] = [];
      for (const type of ['join', 'update', 'leave'] as const) directory.on(type, (c) => changes.push(c));
      await directory.start();
      await one.start();
      await two.start();
      await until(async () => (await directory.get('worker'))?.instances === 2, 5_000, 'two instances');
      const boss = ws.bus().agent('boss');
      for (let i = 0; i < 20; i++) await boss.send('worker', i);
      await until(() => handledBy.length === 20, 5_000, 'the messages');
      expect(new Set(handledBy)).toEqual(new Set(['a', 'b'])); // competing consumers of one group
      await one.stop();
      await until(async () => (await directory.get('worker'))?.instances === 1, 5_000, 'one instance');
      await two.stop();
      await until(() => changes.at(-1)?.type === 'leave', 5_000, 'the last copy to leave');
      expect(changes.map((c) => [c.type, c.agent.instances])).toEqual([
        ['join', 1],
        ['update', 2],
        ['update', 1],
        ['leave', 0],
      ]);
    } finally {
      await ws.close();
    }
  });

  it('ignores a late announcement of an instance that already went offline', async () => {
    const ws = workspace();
    try {
      const bus = ws.bus();
      const directory = bus.agents;
      await directory.start();
      const card = { id: 'bob', name: 'bob', version: '1', skills: [], topics: [] };
      const announce = (seq: number, status: 'online' | 'offline') =>
        bus.publish<AgentPresence>(AgentTopics.presence, {
          status,
          card,
          instance: 'i-1',
          seq,
          heartbeatMs: 1_000,
          timeoutMs: 3_000,
        });
      await announce(1, 'online');
      await directory.waitFor('bob', { timeoutMs: 5_000 });
      await announce(3, 'offline');
      await until(async () => (await directory.get('bob')) === undefined, 5_000, 'bob to leave');
      await announce(2, 'online'); // a redelivered heartbeat from before the stop
      await announce(1, 'online');
      // A barrier: once carol is listed, the late announcements before it were handled too.
      await bus.publish<AgentPresence>(AgentTopics.presence, {
        status: 'online',
        card: { ...card, id: 'carol', name: 'carol' },
        instance: 'i-2',
        seq: 1,
        heartbeatMs: 1_000,
        timeoutMs: 3_000,
      });
      await directory.waitFor('carol', { timeoutMs: 5_000 });
      expect(ids(await directory.list())).toEqual(['carol']);
    } finally {
      await ws.close();
    }
  });

  it('dead-letters a malformed announcement instead of dropping it', async () => {
    const ws = workspace();
    try {
      const bus = ws.bus();
      await bus.agents.start();
      await bus.publish(AgentTopics.presence, { status: 'online', card: { id: 'no dots.allowed' } });
      const carol = bus.agent('carol');
      await carol.start();
      await bus.agents.waitFor('carol', { timeoutMs: 5_000 });
      const dead = await ws.transport.deadLetters.list({ topic: AgentTopics.presence });
      expect(dead.map((d) => d.reason)).toEqual(['validation']);
      expect(dead[0]?.error).toContain('presence.');
    } finally {
      await ws.close();
    }
  });

  it("announces the bus's running agents offline when the bus closes", async () => {
    const ws = workspace();
    try {
      const observer = ws.bus().agents;
      const leaving = ws.bus();
      const a = leaving.agent('a', { heartbeatMs: 60_000 });
      const b = leaving.agent('b', { heartbeatMs: 60_000 });
      await a.start();
      await b.start();
      await observer.waitFor('a', { timeoutMs: 5_000 });
      await observer.waitFor('b', { timeoutMs: 5_000 });
      const left: AgentChange[] = [];
      observer.on('leave', (c) => left.push(c));
      await leaving.close();
      expect(a.running).toBe(false);
      await until(() => left.length === 2, 5_000, 'both agents to leave');
      expect(left.map((c) => [c.agent.id, c.reason]).sort()).toEqual([
        ['a', 'offline'],
        ['b', 'offline'],
      ]);
      expect(() => leaving.agent('c')).toThrow(/closed/);
    } finally {
      await ws.close();
    }
  });

  it('streams changes: the agents alive first, then joins and leaves, until the directory closes', async () => {
    const ws = workspace();
    try {
      const bus = ws.bus();
      const alice = bus.agent('alice', { heartbeatMs: 60_000 });
      const bob = bus.agent('bob', { heartbeatMs: 60_000 });
      await alice.start();
      const directory = new AgentDirectory(ws.bus());
      await directory.waitFor('alice', { timeoutMs: 5_000 });
      const seen: string[] = [];
      const reading = (async () => {
        for await (const c of directory.changes()) {
          seen.push(`${c.type}:${c.agent.id}`);
          if (seen.length === 1) await bob.start();
          if (seen.length === 2) await alice.stop();
        }
      })();
      await until(() => seen.length === 3, 5_000, 'three changes');
      await directory.close();
      await reading; // the iterator ended with the directory
      expect(seen).toEqual(['join:alice', 'join:bob', 'leave:alice']);
      await expect(directory.list()).rejects.toThrow(/closed/);
    } finally {
      await ws.close();
    }
  });

  it('refuses invalid cards and options with ConfigError naming the field, and bad agent ids with ValidationError', async () => {
    const ws = workspace();
    try {
      const bus = ws.bus();
      const fieldOf = (fn: () => unknown) => {
        try {
          fn();
        } catch (err) {
          expect(err).toBeInstanceOf(ConfigError);
          return (err as ConfigError).path;
        }
        throw new Error('did not throw');
      };
      expect(fieldOf(() => bus.agent('a.b'))).toBe('agent.id');
      expect(fieldOf(() => bus.agent({ id: 'a', skills: [{ id: '', name: 'x' }] }))).toBe('agent.skills[0].id');
      expect(
        fieldOf(() =>
          bus.agent({
            id: 'a',
            skills: [
              { id: 's', name: 'x' },
              { id: 's', name: 'y' },
            ],
          }),
        ),
      ).toBe('agent.skills[1].id');
      expect(fieldOf(() => bus.agent({ id: 'a', topics: ['task.>.x'] }))).toBe('agent.topics[0]');
      expect(fieldOf(() => bus.agent('a', { heartbeatMs: 0 }))).toBe('agent.heartbeatMs');
      expect(fieldOf(() => bus.agent('a', { heartbeatMs: 1_000, heartbeatTimeoutMs: 500 }))).toBe(
        'agent.heartbeatTimeoutMs',
      );
      const a = bus.agent('a');
      await a.inbox(() => {});
      expect(fieldOf(() => a.inbox(() => {}))).toBe('inbox');
      expect(() => a.send('not.one.segment', {})).toThrow(ValidationError);
      await expect(a.announce()).rejects.toThrow(/not running/);
      expect(bus.agent('b').card).toEqual({ id: 'b', name: 'b', version: '0.0.0', skills: [], topics: [] });
    } finally {
      await ws.close();
    }
  });
});
