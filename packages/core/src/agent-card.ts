import { assertPattern } from './envelope.js';
import { ConfigError, ValidationError } from './errors.js';

/**
 * One thing an agent can do, as in the A2A Agent Card's `AgentSkill`: a stable `id` to look it
 * up by, a human-readable `name`, and optional description, tags and example prompts.
 */
export interface AgentSkill {
  readonly id: string;
  readonly name: string;
  readonly description?: string;
  readonly tags?: readonly string[];
  readonly examples?: readonly string[];
}

/**
 * What an agent tells the workspace about itself, modelled on the A2A Agent Card: who it is
 * (`id`, `name`, `description`, `version`), what it can do (`skills`) and which topics it serves
 * (`topics`, patterns with `*` and `>`). Published on `agents.presence` with every heartbeat.
 * The whole card travels in every heartbeat: keep `metadata` small.
 */
export interface AgentCard {
  /** Unique name of the agent in the workspace; one topic segment (`[A-Za-z0-9_\-:@$]`, no dots). */
  readonly id: string;
  /** Display name; the id when not given. */
  readonly name: string;
  readonly description?: string;
  /** The agent's own version (e.g. `1.4.0`). Default `0.0.0`. */
  readonly version: string;
  readonly skills: readonly AgentSkill[];
  /** Topic patterns this agent serves (what others may publish for it), e.g. `task.summarize.*`. */
  readonly topics: readonly string[];
  /** Free JSON-serializable details (model, owner, endpoint …). */
  readonly metadata?: Readonly<Record<string, unknown>>;
}

/** What `bus.agent()` accepts: a card whose `name`, `version`, `skills` and `topics` may be left out. */
export interface AgentCardInput {
  readonly id: string;
  readonly name?: string;
  readonly description?: string;
  readonly version?: string;
  readonly skills?: readonly AgentSkill[];
  readonly topics?: readonly string[];
  readonly metadata?: Readonly<Record<string, unknown>>;
}

/** The topics and envelope types agents use (one place, so that tools can subscribe to them). */
export const AgentTopics = Object.freeze({
  /** Every agent's card, with each heartbeat and when it goes offline. */
  presence: 'agents.presence',
  /** A directory asks every running agent to announce itself at once. */
  discover: 'agents.discover',
  /** Workspace broadcast: every agent listening gets its own copy. */
  broadcast: 'workspace.broadcast',
});

/** Envelope `type` of presence announcements. */
export const AGENT_PRESENCE_TYPE = 'agentbus.agent.presence';
/** Envelope `type` of a directory's discover request. */
export const AGENT_DISCOVER_TYPE = 'agentbus.agent.discover';

/** The topic of an agent's inbox: `agent.<id>.inbox`. */
export function agentInboxTopic(agentId: string): string {
  assertAgentId(agentId);
  return `agent.${agentId}.inbox`;
}

/** The durable group of an agent's inbox (`agent.<id>`), shared by every running copy of the agent. */
export function agentInboxGroup(agentId: string): string {
  assertAgentId(agentId);
  return `agent.${agentId}`;
}

const AGENT_ID = /^[A-Za-z0-9_\-:@$]{1,128}$/;

/** Throws ValidationError unless `id` is a valid agent id (one topic segment, 1–128 characters). */
export function assertAgentId(id: string): void {
  if (typeof id !== 'string' || !AGENT_ID.test(id)) {
    throw new ValidationError(
      `invalid agent id ${JSON.stringify(id)}: 1–128 characters of [A-Za-z0-9_-:@$] expected (one topic segment)`,
    );
  }
}

/** An announcement on `agents.presence` (the data of its envelope). */
export interface AgentPresence {
  readonly status: 'online' | 'offline';
  readonly card: AgentCard;
  /** Unique per start of an agent: several running copies of one agent are told apart by it. */
  readonly instance: string;
  /** Increases with every announcement of an instance, so that a late or repeated one is ignored. */
  readonly seq: number;
  /** How often the instance announces itself. */
  readonly heartbeatMs: number;
  /** After this long without an announcement the instance counts as gone. */
  readonly timeoutMs: number;
}

type Fail = (message: string, path: string) => never;

const configFail: Fail = (message, path) => {
  throw new ConfigError(message, { path });
};

const validationFail: Fail = (message, path) => {
  throw new ValidationError(`${path}: ${message}`, { data: { path } });
};

function optionalString(value: unknown, path: string, fail: Fail): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'string') fail('must be a string', path);
  return value as string;
}

function nonEmptyString(value: unknown, path: string, fail: Fail): string {
  if (typeof value !== 'string' || value.length === 0) fail('must be a non-empty string', path);
  return value as string;
}

function stringList(value: unknown, path: string, fail: Fail): readonly string[] | undefined {
  if (value === undefined) return undefined;
  if (!Array.isArray(value)) fail('must be an array of strings', path);
  (value as unknown[]).forEach((s, i) => {
    if (typeof s !== 'string') fail('must be a string', `${path}[${i}]`);
  });
  return Object.freeze([...(value as string[])]);
}

function skill(value: unknown, path: string, fail: Fail): AgentSkill {
  if (typeof value !== 'object' || value === null) fail('must be an object', path);
  const s = value as Record<string, unknown>;
  const id = nonEmptyString(s.id, `${path}.id`, fail);
  const out: Record<string, unknown> = { id, name: optionalString(s.name, `${path}.name`, fail) ?? id };
  const description = optionalString(s.description, `${path}.description`, fail);
  if (description !== undefined) out.description = description;
  const tags = stringList(s.tags, `${path}.tags`, fail);
  if (tags !== undefined) out.tags = tags;
  const examples = stringList(s.examples, `${path}.examples`, fail);
  if (examples !== undefined) out.examples = examples;
  return Object.freeze(out) as unknown as AgentSkill;
}

function checkCard(input: unknown, path: string, fail: Fail): AgentCard {
  const value = typeof input === 'string' ? { id: input } : input;
  if (typeof value !== 'object' || value === null) fail('must be an agent card or an agent id', path);
  const c = value as Record<string, unknown>;
  try {
    assertAgentId(c.id as string);
  } catch (err) {
    fail((err as Error).message, `${path}.id`);
  }
  const id = c.id as string;
  const card: Record<string, unknown> = { id, name: optionalString(c.name, `${path}.name`, fail) ?? id };
  const description = optionalString(c.description, `${path}.description`, fail);
  if (description !== undefined) card.description = description;
  card.version = optionalString(c.version, `${path}.version`, fail) ?? '0.0.0';
  if (c.skills !== undefined && !Array.isArray(c.skills)) fail('must be an array of skills', `${path}.skills`);
  const skills = ((c.skills as unknown[] | undefined) ?? []).map((s, i) => skill(s, `${path}.skills[${i}]`, fail));
  const ids = new Set<string>();
  for (const [i, s] of skills.entries()) {
    if (ids.has(s.id)) fail(`duplicate skill id ${JSON.stringify(s.id)}`, `${path}.skills[${i}].id`);
    ids.add(s.id);
  }
  card.skills = Object.freeze(skills);
  const topics = stringList(c.topics, `${path}.topics`, fail) ?? Object.freeze([]);
  topics.forEach((t, i) => {
    try {
      assertPattern(t);
    } catch (err) {
      fail((err as Error).message, `${path}.topics[${i}]`);
    }
  });
  card.topics = topics;
  if (c.metadata !== undefined) {
    if (typeof c.metadata !== 'object' || c.metadata === null || Array.isArray(c.metadata)) {
      fail('must be an object', `${path}.metadata`);
    }
    card.metadata = Object.freeze({ ...(c.metadata as Record<string, unknown>) });
  }
  return Object.freeze(card) as unknown as AgentCard;
}

/**
 * A complete, frozen card from a card input or a bare id; throws ConfigError naming the field
 * (`agent.skills[0].id: must be a non-empty string`).
 */
export function agentCard(input: AgentCardInput | string, path = 'agent'): AgentCard {
  return checkCard(input, path, configFail);
}

function positive(value: unknown, path: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0)
    validationFail('must be a positive number', path);
  return value as number;
}

/** Checks an announcement received on `agents.presence`; throws ValidationError when it is not one. */
export function parseAgentPresence(data: unknown): AgentPresence {
  if (typeof data !== 'object' || data === null) validationFail('must be an object', 'presence');
  const p = data as Record<string, unknown>;
  if (p.status !== 'online' && p.status !== 'offline')
    validationFail("must be 'online' or 'offline'", 'presence.status');
  if (!Number.isSafeInteger(p.seq) || (p.seq as number) < 0) validationFail('must be an integer >= 0', 'presence.seq');
  if (typeof p.card !== 'object' || p.card === null) validationFail('must be an agent card', 'presence.card');
  return Object.freeze({
    status: p.status as 'online' | 'offline',
    card: checkCard(p.card, 'presence.card', validationFail),
    instance: nonEmptyString(p.instance, 'presence.instance', validationFail),
    seq: p.seq as number,
    heartbeatMs: positive(p.heartbeatMs, 'presence.heartbeatMs'),
    timeoutMs: positive(p.timeoutMs, 'presence.timeoutMs'),
  });
}
