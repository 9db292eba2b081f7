import { type Clock, systemClock } from '../clock.js';
import { assertPattern } from '../envelope.js';
import { BusError, ConfigError, ForbiddenError } from '../errors.js';
import type { Identity } from './jwt.js';

/**
 * What a principal may do on a topic or pattern: `publish` an event, `subscribe` to a pattern,
 * `request` (publish a request expecting a reply), `reply` (answer a request made on a topic)
 * and `dlq-admin` (list, replay or purge the dead letters of a topic or pattern).
 */
export type Action = 'publish' | 'subscribe' | 'request' | 'reply' | 'dlq-admin';

export const ACTIONS: readonly Action[] = Object.freeze(['publish', 'subscribe', 'request', 'reply', 'dlq-admin']);

/**
 * Who is acting: an authenticated subject with its roles, optionally within a tenant. An
 * {@link Identity} from a JWT verifier is one.
 */
export interface Principal {
  readonly subject: Identity['subject'];
  readonly roles: readonly string[];
  readonly tenant?: Identity['tenant'];
}

/** Allows (or denies) some actions on some topic patterns. */
export interface PermissionRule {
  /** Default `allow`. A deny overrides every allow it overlaps. */
  readonly effect?: 'allow' | 'deny';
  /** One action, several, or `*` for all of them. */
  readonly actions: Action | readonly Action[] | '*';
  /** Topic patterns (`*` one segment, a final `>` one or more). */
  readonly patterns: string | readonly string[];
}

/** A role: its own rules plus everything its parents grant or deny. */
export interface RoleDefinition {
  /** Parent roles; every rule of a parent (and of its parents) applies to this role too. */
  readonly inherits?: readonly string[];
  readonly rules?: readonly PermissionRule[];
}

/**
 * A rule for one principal (an access-control-list entry), e.g. a temporary grant to one agent.
 * It applies to identities with this `subject` and the same `tenant` (both absent, or equal).
 */
export interface AclGrant extends PermissionRule {
  readonly subject: string;
  readonly tenant?: string;
  /** From this instant on (policy clock) the entry no longer applies. */
  readonly expiresAt?: Date | number | string;
}

export interface PolicyOptions {
  /** Roles by name. Inheritance must be acyclic and name defined roles only (ConfigError otherwise). */
  readonly roles?: Readonly<Record<string, RoleDefinition>>;
  readonly acl?: readonly AclGrant[];
  /** Decides whether an ACL entry has expired. Default: the system clock. */
  readonly clock?: Clock;
}

/** Why a check came out as it did. */
export type DecisionReason = 'allowed' | 'denied' | 'not-granted';

export interface Decision {
  readonly allowed: boolean;
  /**
   * `denied`: a deny rule overlaps the topic or pattern; `not-granted`: no allow rule matches the
   * topic, or the allow rules together do not match every topic of the pattern.
   */
  readonly reason: DecisionReason;
  /** With `denied`: the pattern of a deny rule that overlaps. */
  readonly deniedBy?: string;
}

// ---------------------------------------------------------------------------------------------
// Pattern algebra. Topics and patterns are compared segment by segment; a concrete topic is a
// pattern without wildcards. The segments a topic may have are unbounded, so a pattern's literal
// segment never covers a `*`: there is always a segment no literal names.

function segmentsOf(pattern: string, path = 'pattern'): string[] {
  try {
    assertPattern(pattern);
  } catch (err) {
    if (path === 'pattern') throw err;
    throw new ConfigError(err instanceof BusError ? err.message : String(err), { path, cause: err });
  }
  return pattern.split('.');
}

function hasWildcard(segs: readonly string[]): boolean {
  for (const s of segs) if (s === '*' || s === '>') return true;
  return false;
}

/** Whether the pattern `p` matches the concrete topic `t` (both split into segments). */
function matchSegs(p: readonly string[], t: readonly string[]): boolean {
  for (let i = 0; i < p.length; i++) {
    const s = p[i];
    if (s === '>') return t.length > i;
    if (i >= t.length) return false;
    if (s !== '*' && s !== t[i]) return false;
  }
  return p.length === t.length;
}

/**
 * Whether the patterns of `alive` together match every topic that `inner` matches, given that
 * each of them matches every prefix `inner[0, i)` stands for.
 */
function coversFrom(alive: readonly (readonly string[])[], inner: readonly string[], i: number): boolean {
  if (alive.length === 0) return false;
  const seg = inner[i];
  // The topic ends here: an outer pattern must end here too (a `>` here wants one more segment).
  if (seg === undefined) return alive.some((a) => a.length === i);
  // The topic goes on for at least one segment, which an outer `>` here takes, whatever follows.
  if (alive.some((a) => a[i] === '>')) return true;
  if (seg === '>') return coversTail(alive, i);
  // Under an inner `*` only outer `*`s survive: a literal cannot take every segment. (Covering
  // a segment no outer literal names is needed and enough, as the survivors then only grow.)
  return coversFrom(
    alive.filter((a) => a[i] === '*' || (seg !== '*' && a[i] === seg)),
    inner,
    i + 1,
  );
}

/** Whether `alive` matches every topic whose segments from `i` on are one or more arbitrary ones. */
function coversTail(alive: readonly (readonly string[])[], i: number): boolean {
  let current = alive;
  for (let at = i; current.length > 0; at++) {
    if (current.some((a) => a[at] === '>')) return true;
    current = current.filter((a) => a[at] === '*');
    // One arbitrary segment at `at`, then the topic either ends there or goes on.
    if (!current.some((a) => a.length === at + 1)) return false;
  }
  return false;
}

/**
 * Whether every topic `inner` matches is matched by `outer` (both topics or patterns). `>` is
 * contained only by `>` at the same place or earlier; `*` only by `*` or `>`.
 */
export function patternContains(outer: string, inner: string): boolean {
  return coversFrom([segmentsOf(outer)], segmentsOf(inner), 0);
}

/**
 * Whether the patterns of `outers` together match every topic `inner` matches: `a.*` and
 * `a.*.>` together cover `a.>`, which neither contains alone.
 */
export function patternsCover(outers: readonly string[], inner: string): boolean {
  return coversFrom(
    outers.map((o) => segmentsOf(o)),
    segmentsOf(inner),
    0,
  );
}

function overlapSegs(a: readonly string[], b: readonly string[]): boolean {
  for (let i = 0; ; i++) {
    const x = a[i];
    const y = b[i];
    if (x === undefined || y === undefined) return x === y;
    // The other side has at least one segment left; whatever they are, `>` matches them.
    if (x === '>' || y === '>') return true;
    if (x !== '*' && y !== '*' && x !== y) return false;
  }
}

/** Whether some topic is matched by both `a` and `b` (topics or patterns). */
export function patternsOverlap(a: string, b: string): boolean {
  return overlapSegs(segmentsOf(a), segmentsOf(b));
}

// ---------------------------------------------------------------------------------------------
// Policy.

interface CompiledRule {
  readonly deny: boolean;
  readonly actions: ReadonlySet<Action>;
  readonly patterns: readonly string[];
  readonly segments: readonly (readonly string[])[];
}

interface CompiledAcl extends CompiledRule {
  readonly expiresAtMs: number;
}

/** The rules that apply to one action, split by effect. */
interface ActionRules {
  readonly allow: readonly (readonly string[])[];
  readonly deny: readonly { readonly pattern: string; readonly segs: readonly string[] }[];
}

function compileRule(rule: PermissionRule, path: string): CompiledRule {
  if (rule === null || typeof rule !== 'object') throw new ConfigError('must be a rule object', { path });
  const effect = rule.effect ?? 'allow';
  if (effect !== 'allow' && effect !== 'deny') {
    throw new ConfigError(`must be 'allow' or 'deny', got ${String(effect)}`, { path: `${path}.effect` });
  }
  const actions = rule.actions === '*' ? ACTIONS : typeof rule.actions === 'string' ? [rule.actions] : rule.actions;
  if (!Array.isArray(actions) || actions.length === 0) {
    throw new ConfigError('must name one action or more', { path: `${path}.actions` });
  }
  for (const a of actions) {
    if (!ACTIONS.includes(a)) {
      throw new ConfigError(`unknown action ${JSON.stringify(a)} (one of ${ACTIONS.join(', ')}, or '*')`, {
        path: `${path}.actions`,
      });
    }
  }
  const patterns = typeof rule.patterns === 'string' ? [rule.patterns] : rule.patterns;
  if (!Array.isArray(patterns) || patterns.length === 0) {
    throw new ConfigError('must name one pattern or more', { path: `${path}.patterns` });
  }
  return {
    deny: effect === 'deny',
    actions: new Set(actions),
    patterns: [...patterns],
    segments: patterns.map((p, i) => segmentsOf(p, `${path}.patterns.${i}`)),
  };
}

function toMs(value: Date | number | string, path: string): number {
  const ms = value instanceof Date ? value.getTime() : typeof value === 'number' ? value : Date.parse(value);
  if (!Number.isFinite(ms)) throw new ConfigError(`must be a date, got ${String(value)}`, { path });
  return ms;
}

/** One key per (tenant, subject): no tenant is not the empty tenant, and no NUL in either can make another's key. */
function principalKey(subject: string, tenant: string | undefined): string {
  return JSON.stringify([tenant ?? null, subject]);
}

/** How a principal is named in messages: `subject`, or `subject@tenant`. */
export function principalName(p: Pick<Principal, 'subject' | 'tenant'>): string {
  return p.tenant === undefined ? p.subject : `${p.subject}@${p.tenant}`;
}

/**
 * Role-based and per-principal permissions on topic patterns. Deny by default: an action on a
 * topic is allowed when an allow rule of one of the principal's roles (or of their ancestors) or
 * of an unexpired ACL entry for the principal matches it, and no deny rule does. On a pattern
 * (a subscription, a dead-letter filter) it is allowed when the allow rules together match every
 * topic the pattern matches ({@link patternsCover}) and no deny rule overlaps it
 * ({@link patternsOverlap}): a deny overrides any allow, so a pattern reaching into a denied
 * topic at all is refused. Roles an identity names that the policy does not define grant nothing.
 */
export class Policy {
  readonly clock: Clock;
  /** Each role's rules with those of all its ancestors. */
  readonly #roleRules = new Map<string, readonly CompiledRule[]>();
  /** Each role with its ancestors. */
  readonly #ancestry = new Map<string, readonly string[]>();
  readonly #acl = new Map<string, CompiledAcl[]>();
  /** Role rules per action, by the (sorted) role set of an identity: roles never change after construction. */
  readonly #byRoles = new Map<string, Map<Action, ActionRules>>();
  readonly #rolesKeys = new WeakMap<readonly string[], string>();
  readonly #targets = new Map<string, readonly string[]>();

  constructor(options: PolicyOptions = {}) {
    this.clock = options.clock ?? systemClock;
    if (typeof this.clock?.now !== 'function') throw new ConfigError('must be a Clock', { path: 'clock' });
    const roles = options.roles ?? {};
    if (roles === null || typeof roles !== 'object') throw new ConfigError('must be an object', { path: 'roles' });
    const own = new Map<string, { inherits: readonly string[]; rules: CompiledRule[] }>();
    for (const [name, def] of Object.entries(roles)) {
      const path = `roles.${name}`;
      if (def === null || typeof def !== 'object') throw new ConfigError('must be a role definition', { path });
      const inherits = def.inherits ?? [];
      if (!Array.isArray(inherits)) throw new ConfigError('must be a list of role names', { path: `${path}.inherits` });
      own.set(name, { inherits, rules: (def.rules ?? []).map((r, i) => compileRule(r, `${path}.rules.${i}`)) });
    }
    for (const [name, def] of own) {
      for (const parent of def.inherits) {
        if (!own.has(parent)) {
          throw new ConfigError(`inherits ${JSON.stringify(parent)}, which is not a role`, {
            path: `roles.${name}.inherits`,
          });
        }
      }
    }
    // Depth-first: a role met again while its own ancestors are being walked closes a cycle.
    const walking: string[] = [];
    const visit = (name: string): readonly string[] => {
      const done = this.#ancestry.get(name);
      if (done) return done;
      const at = walking.indexOf(name);
      if (at >= 0) {
        const cycle = [...walking.slice(at), name].join(' → ');
        throw new ConfigError(`role inheritance cycle: ${cycle}`, { path: `roles.${name}.inherits` });
      }
      walking.push(name);
      const all = new Set<string>([name]);
      for (const parent of own.get(name)?.inherits ?? []) for (const r of visit(parent)) all.add(r);
      walking.pop();
      const ancestry = [...all];
      this.#ancestry.set(name, ancestry);
      this.#roleRules.set(
        name,
        ancestry.flatMap((r) => own.get(r)?.rules ?? []),
      );
      return ancestry;
    };
    for (const name of own.keys()) visit(name);
    (options.acl ?? []).forEach((g, i) => {
      this.#addAcl(g, `acl.${i}`);
    });
  }

  #addAcl(grant: AclGrant, path: string): CompiledAcl {
    if (grant === null || typeof grant !== 'object') throw new ConfigError('must be an ACL entry', { path });
    if (typeof grant.subject !== 'string' || grant.subject === '') {
      throw new ConfigError('must be a non-empty string', { path: `${path}.subject` });
    }
    if (grant.tenant !== undefined && typeof grant.tenant !== 'string') {
      throw new ConfigError('must be a string', { path: `${path}.tenant` });
    }
    const entry: CompiledAcl = {
      ...compileRule(grant, path),
      expiresAtMs:
        grant.expiresAt === undefined ? Number.POSITIVE_INFINITY : toMs(grant.expiresAt, `${path}.expiresAt`),
    };
    const key = principalKey(grant.subject, grant.tenant);
    const list = this.#acl.get(key);
    if (list) list.push(entry);
    else this.#acl.set(key, [entry]);
    return entry;
  }

  /** Adds an ACL entry; the returned function removes it again. Expired entries are dropped as they are met. */
  grant(grant: AclGrant): () => void {
    const entry = this.#addAcl(grant, 'grant');
    const key = principalKey(grant.subject, grant.tenant);
    return () => {
      const list = this.#acl.get(key);
      const at = list?.indexOf(entry) ?? -1;
      if (list === undefined || at < 0) return;
      list.splice(at, 1);
      if (list.length === 0) this.#acl.delete(key);
    };
  }

  /** The roles `principal` holds: its own defined roles and all their ancestors. */
  rolesOf(principal: Principal): string[] {
    const all = new Set<string>();
    for (const r of principal.roles) for (const a of this.#ancestry.get(r) ?? []) all.add(a);
    return [...all];
  }

  #roleRulesFor(roles: readonly string[], action: Action): ActionRules {
    // A frozen role list (the middleware's principal) keeps its key; another may change meanwhile.
    let key = this.#rolesKeys.get(roles);
    if (key === undefined) {
      key = JSON.stringify([...new Set(roles)].sort());
      if (Object.isFrozen(roles)) this.#rolesKeys.set(roles, key);
    }
    let perAction = this.#byRoles.get(key);
    if (perAction === undefined) {
      if (this.#byRoles.size >= 1_000) this.#byRoles.clear();
      perAction = new Map();
      this.#byRoles.set(key, perAction);
    }
    let rules = perAction.get(action);
    if (rules === undefined) {
      const allow: (readonly string[])[] = [];
      const deny: { pattern: string; segs: readonly string[] }[] = [];
      const seen = new Set<CompiledRule>();
      for (const role of roles) {
        for (const rule of this.#roleRules.get(role) ?? []) {
          if (seen.has(rule)) continue; // an ancestor shared by two roles
          seen.add(rule);
          collect(rule, action, allow, deny);
        }
      }
      rules = { allow, deny };
      perAction.set(action, rules);
    }
    return rules;
  }

  #aclRulesFor(principal: Principal, action: Action): ActionRules | undefined {
    const key = principalKey(principal.subject, principal.tenant);
    const list = this.#acl.get(key);
    if (list === undefined) return undefined;
    const now = this.clock.now();
    const allow: (readonly string[])[] = [];
    const deny: { pattern: string; segs: readonly string[] }[] = [];
    for (let i = list.length - 1; i >= 0; i--) {
      const entry = list[i] as CompiledAcl;
      if (entry.expiresAtMs <= now) {
        list.splice(i, 1);
        continue;
      }
      collect(entry, action, allow, deny);
    }
    if (list.length === 0) this.#acl.delete(key);
    return { allow, deny };
  }

  /** Whether `principal` may do `action` on `target` (a topic or a pattern). */
  check(principal: Principal, action: Action, target: string): boolean {
    return this.decide(principal, action, target).allowed;
  }

  /** {@link check} with the reason. Throws ValidationError for a target that is no topic or pattern. */
  decide(principal: Principal, action: Action, target: string): Decision {
    const segs = this.#segmentsOf(target);
    if (!ACTIONS.includes(action)) return NOT_GRANTED;
    const roles = this.#roleRulesFor(principal.roles, action);
    const acl = this.#aclRulesFor(principal, action);
    const concrete = !hasWildcard(segs);
    const overlaps = concrete ? matchSegs : overlapSegs;
    for (const d of roles.deny) if (overlaps(d.segs, segs)) return denied(d.pattern);
    if (acl) for (const d of acl.deny) if (overlaps(d.segs, segs)) return denied(d.pattern);
    if (concrete) {
      for (const a of roles.allow) if (matchSegs(a, segs)) return ALLOWED;
      if (acl) for (const a of acl.allow) if (matchSegs(a, segs)) return ALLOWED;
      return NOT_GRANTED;
    }
    const allow = acl ? [...roles.allow, ...acl.allow] : roles.allow;
    return coversFrom(allow, segs, 0) ? ALLOWED : NOT_GRANTED;
  }

  /** The segments of a valid topic or pattern; the publish path asks about the same few topics again and again. */
  #segmentsOf(target: string): readonly string[] {
    let segs = this.#targets.get(target);
    if (segs === undefined) {
      segs = segmentsOf(target);
      if (this.#targets.size >= TARGETS_CACHED) this.#targets.clear();
      this.#targets.set(target, segs);
    }
    return segs;
  }

  /** Throws {@link ForbiddenError} (`data`: action, topic or pattern, principal, reason) unless allowed. */
  assert(principal: Principal, action: Action, target: string): void {
    const decision = this.decide(principal, action, target);
    if (!decision.allowed) throw forbidden(principal, action, target, decision.reason);
  }
}

const TARGETS_CACHED = 1_000;
const ALLOWED: Decision = Object.freeze({ allowed: true, reason: 'allowed' });
const denied = (pattern: string): Decision => ({ allowed: false, reason: 'denied', deniedBy: pattern });
const NOT_GRANTED: Decision = Object.freeze({ allowed: false, reason: 'not-granted' });

function collect(
  rule: CompiledRule,
  action: Action,
  allow: (readonly string[])[],
  deny: { pattern: string; segs: readonly string[] }[],
): void {
  if (!rule.actions.has(action)) return;
  rule.segments.forEach((segs, i) => {
    if (rule.deny) deny.push({ pattern: rule.patterns[i] as string, segs });
    else allow.push(segs);
  });
}

/**
 * The ForbiddenError of a refused action: its message and `data` name the action, the topic (or
 * for `subscribe` the pattern), the principal (its subject; `tenant` beside it) and the reason.
 */
export function forbidden(
  principal: Pick<Principal, 'subject' | 'tenant'>,
  action: Action,
  target: string,
  reason: string,
  extra: Readonly<Record<string, unknown>> = {},
): ForbiddenError {
  const what = action === 'subscribe' ? 'pattern' : 'topic';
  return new ForbiddenError(`${principalName(principal)} may not ${action} ${what} ${target} (${reason})`, {
    data: {
      action,
      [what]: target,
      principal: principal.subject,
      ...(principal.tenant === undefined ? {} : { tenant: principal.tenant }),
      reason,
      ...extra,
    },
  });
}

/** Builds a {@link Policy}; ConfigError for an invalid rule, an unknown parent role or an inheritance cycle. */
export function createPolicy(options: PolicyOptions = {}): Policy {
  return new Policy(options);
}
