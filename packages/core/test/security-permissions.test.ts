import { until } from '@agentbus/conformance';
import {
  ACTIONS,
  type AclGrant,
  type Action,
  authorization,
  type Bus,
  ConfigError,
  createBus,
  createPolicy,
  type Envelope,
  ForbiddenError,
  InboxRegistry,
  inboxRegistryOf,
  ManualClock,
  type MemoryTransport,
  memoryTransport,
  type PermissionRule,
  type Principal,
  patternContains,
  patternsCover,
  patternsOverlap,
  type RoleDefinition,
  TimeoutError,
  topicMatches,
  ValidationError,
} from '@agentbus/core';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';

// ---------------------------------------------------------------------------------------------
// The reference model: brute force over every topic of a tiny world. Patterns use the literal
// segments `a` and `b` only, so `c` stands for every segment no pattern names; patterns have at
// most 3 segments, so topics of up to 4 segments decide containment and overlap (a longer topic
// behaves as its first 4 segments do).

const LITERALS = ['a', 'b'] as const;
const TOPICS: readonly string[] = (() => {
  const out: string[] = [];
  let level: string[] = [''];
  for (let depth = 1; depth <= 4; depth++) {
    level = level.flatMap((prefix) => ['a', 'b', 'c'].map((s) => (prefix === '' ? s : `${prefix}.${s}`)));
    out.push(...level);
  }
  return out;
})();

/** Matching as the design states it, written as a regular expression over the whole topic. */
function refMatch(pattern: string, topic: string): boolean {
  const source = pattern
    .split('.')
    .map((s) => (s === '*' ? '[^.]+' : s === '>' ? '.+' : s))
    .join('\\.');
  return new RegExp(`^${source}$`).test(topic);
}

const matchedCache = new Map<string, readonly boolean[]>();
/** For each topic of the world, whether `pattern` matches it. */
function matched(pattern: string): readonly boolean[] {
  let row = matchedCache.get(pattern);
  if (row === undefined) {
    row = TOPICS.map((t) => refMatch(pattern, t));
    matchedCache.set(pattern, row);
  }
  return row;
}

function refCover(outers: readonly string[], inner: string): boolean {
  const m = matched(inner);
  return TOPICS.every((_, i) => !m[i] || outers.some((o) => matched(o)[i]));
}

function refOverlap(a: string, b: string): boolean {
  const x = matched(a);
  const y = matched(b);
  return TOPICS.some((_, i) => x[i] && y[i]);
}

const segmentArb = fc.constantFrom(...LITERALS, '*');
/** Topics and patterns of 1–3 segments over the world's literals. */
const patternArb: fc.Arbitrary<string> = fc
  .tuple(fc.array(segmentArb, { minLength: 1, maxLength: 3 }), fc.boolean())
  .map(([segs, tail]) => (tail ? [...segs.slice(0, -1), '>'] : segs).join('.'));

interface ModelRole {
  readonly inherits: readonly string[];
  readonly rules: readonly PermissionRule[];
}

interface ModelCase {
  readonly roles: Readonly<Record<string, ModelRole>>;
  readonly acl: readonly AclGrant[];
  readonly requests: readonly {
    readonly principal: Principal;
    readonly action: Action;
    readonly target: string;
    readonly advanceMs: number;
  }[];
}

const START_MS = Date.UTC(2026, 0, 1);
const ROLE_NAMES = ['r0', 'r1', 'r2', 'r3'] as const;

const ruleArb: fc.Arbitrary<PermissionRule> = fc.record({
  effect: fc.constantFrom('allow', 'allow', 'allow', 'deny'),
  actions: fc.oneof(
    { weight: 1, arbitrary: fc.constant('*' as const) },
    { weight: 4, arbitrary: fc.subarray([...ACTIONS], { minLength: 1 }) },
  ),
  patterns: fc.array(patternArb, { minLength: 1, maxLength: 2 }),
});

/** Mostly valid hierarchies (parents among the earlier roles); now and then any roles and parents, cycles included. */
const rolesArb: fc.Arbitrary<Record<string, ModelRole>> = fc.oneof(
  {
    weight: 9,
    arbitrary: fc
      .tuple(
        ...ROLE_NAMES.map((_, i) =>
          fc.record({
            inherits: fc.subarray(ROLE_NAMES.slice(0, i) as string[]),
            rules: fc.array(ruleArb, { maxLength: 3 }),
          }),
        ),
      )
      .map((defs) => Object.fromEntries(defs.map((d, i) => [ROLE_NAMES[i], d]))),
  },
  {
    weight: 1,
    arbitrary: fc
      .tuple(
        fc.subarray([...ROLE_NAMES], { minLength: 1 }),
        fc.array(
          fc.record({
            inherits: fc.subarray([...ROLE_NAMES], { maxLength: 2 }),
            rules: fc.array(ruleArb, { maxLength: 2 }),
          }),
          { minLength: 4, maxLength: 4 },
        ),
      )
      .map(([names, defs]) => Object.fromEntries(names.map((n, i) => [n, defs[i] as ModelRole]))),
  },
);

const subjectArb = fc.constantFrom('ann', 'bob');
const tenantArb = fc.constantFrom(undefined, undefined, 't1');

const aclArb: fc.Arbitrary<AclGrant> = fc
  .record({
    subject: subjectArb,
    tenant: tenantArb,
    rule: ruleArb,
    expiresInMs: fc.constantFrom(undefined, -1_000, -1, 0, 1, 500, 1_000, 60_000),
  })
  .map(({ subject, tenant, rule, expiresInMs }) => ({
    ...rule,
    subject,
    ...(tenant === undefined ? {} : { tenant }),
    ...(expiresInMs === undefined ? {} : { expiresAt: START_MS + expiresInMs }),
  }));

const requestArb = fc.record({
  principal: fc
    .record({
      subject: subjectArb,
      tenant: tenantArb,
      roles: fc.subarray([...ROLE_NAMES, 'undefined-role']),
    })
    .map(({ subject, tenant, roles }): Principal => ({ subject, roles, ...(tenant === undefined ? {} : { tenant }) })),
  action: fc.constantFrom(...ACTIONS),
  target: patternArb,
  advanceMs: fc.constantFrom(0, 0, 1, 400),
});

const caseArb: fc.Arbitrary<ModelCase> = fc.record({
  roles: rolesArb,
  acl: fc.array(aclArb, { maxLength: 3 }),
  requests: fc.array(requestArb, { minLength: 1, maxLength: 4 }),
});

/** A policy is invalid when a role inherits an undefined role, or reaches itself through its parents. */
function refInvalid(roles: Readonly<Record<string, ModelRole>>): boolean {
  const names = Object.keys(roles);
  if (names.some((n) => roles[n]?.inherits.some((p) => !names.includes(p)))) return true;
  const reach = new Map(names.map((n) => [n, new Set(roles[n]?.inherits ?? [])]));
  for (let round = 0; round < names.length; round++) {
    for (const n of names) {
      const set = reach.get(n) as Set<string>;
      for (const p of [...set]) for (const q of reach.get(p) ?? []) set.add(q);
    }
  }
  return names.some((n) => reach.get(n)?.has(n));
}

function refAllowed(c: ModelCase, principal: Principal, action: Action, target: string, nowMs: number): boolean {
  const held = new Set(principal.roles.filter((r) => r in c.roles));
  for (let round = 0; round < ROLE_NAMES.length; round++) {
    for (const r of [...held]) for (const p of c.roles[r]?.inherits ?? []) held.add(p);
  }
  const rules: PermissionRule[] = [...held].flatMap((r) => c.roles[r]?.rules ?? []);
  for (const g of c.acl) {
    const expired = g.expiresAt !== undefined && (g.expiresAt as number) <= nowMs;
    if (g.subject === principal.subject && g.tenant === principal.tenant && !expired) rules.push(g);
  }
  const actionsOf = (r: PermissionRule) =>
    r.actions === '*' ? ACTIONS : typeof r.actions === 'string' ? [r.actions] : r.actions;
  const forAction = rules.filter((r) => actionsOf(r).includes(action));
  const patterns = (r: PermissionRule) => (typeof r.patterns === 'string' ? [r.patterns] : r.patterns);
  const allows = forAction.filter((r) => r.effect !== 'deny').flatMap(patterns);
  const denies = forAction.filter((r) => r.effect === 'deny').flatMap(patterns);
  return refCover(allows, target) && !denies.some((d) => refOverlap(d, target));
}

// ---------------------------------------------------------------------------------------------

describe('topic pattern algebra', () => {
  it('the reference matcher agrees with topicMatches on every pattern and topic of the world', () => {
    const patterns = new Set<string>();
    for (let depth = 1; depth <= 3; depth++) {
      let level = [''];
      for (let d = 0; d < depth; d++) {
        level = level.flatMap((p) => ['a', 'b', '*'].map((s) => (p === '' ? s : `${p}.${s}`)));
      }
      for (const p of level) {
        patterns.add(p);
        patterns.add([...p.split('.').slice(0, -1), '>'].join('.'));
      }
    }
    expect(patterns.size).toBe(52);
    for (const p of patterns)
      for (const t of TOPICS) expect([p, t, refMatch(p, t)]).toEqual([p, t, topicMatches(p, t)]);
  });

  it.each([
    ['>', '>', true],
    ['>', 'a', true],
    ['>', '*.>', true],
    ['*.>', '>', false],
    ['a.>', 'a.*', true],
    ['a.>', 'a.*.>', true],
    ['a.*', 'a.>', false],
    ['a.*.>', 'a.>', false],
    ['a.>', 'a', false],
    ['*', 'a', true],
    ['a', '*', false],
    ['a.*.c', 'a.b.c', true],
    ['a.b.c', 'a.*.c', false],
    ['*.*', '*.>', false],
    ['*.>', '*.*', true],
    ['a.b', 'a.b', true],
    ['a.b', 'a.b.c', false],
  ])('patternContains(%s, %s) is %s', (outer, inner, expected) => {
    expect(patternContains(outer, inner)).toBe(expected);
  });

  it.each([
    ['a.*', '*.b', true],
    ['a', 'a.>', false],
    ['a.>', '*', false],
    ['>', 'x.y.z', true],
    ['a.>', '*.b.>', true],
    ['tasks.*', 'tasks.secret.>', false],
    ['tasks.>', 'tasks.secret.>', true],
    ['a.b', 'a.c', false],
    ['*.*', 'a.b.c', false],
  ])('patternsOverlap(%s, %s) is %s', (a, b, expected) => {
    expect(patternsOverlap(a, b)).toBe(expected);
    expect(patternsOverlap(b, a)).toBe(expected);
  });

  it('patternsCover takes the allow patterns together: a.* and a.*.> cover a.>, neither alone does', () => {
    expect(patternsCover(['a.*', 'a.*.>'], 'a.>')).toBe(true);
    expect(patternContains('a.*', 'a.>')).toBe(false);
    expect(patternContains('a.*.>', 'a.>')).toBe(false);
    // Literals never cover a wildcard: some segment is always left over.
    expect(patternsCover(['a.x', 'a.y', 'a.z'], 'a.*')).toBe(false);
    expect(patternsCover([], 'a')).toBe(false);
  });

  it('refuses what is no topic or pattern with ValidationError', () => {
    expect(() => patternContains('a.>.b', 'a')).toThrow(ValidationError);
    expect(() => patternsOverlap('', 'a')).toThrow(ValidationError);
  });

  it('containment, union cover and overlap agree with brute force over the world', () => {
    let cases = 0;
    fc.assert(
      fc.property(fc.array(patternArb, { minLength: 0, maxLength: 4 }), patternArb, (outers, inner) => {
        cases++;
        expect(patternsCover(outers, inner)).toBe(refCover(outers, inner));
        for (const o of outers) {
          expect(patternContains(o, inner)).toBe(refCover([o], inner));
          expect(patternsOverlap(o, inner)).toBe(refOverlap(o, inner));
        }
      }),
      { numRuns: 5_000 },
    );
    expect(cases).toBe(5_000);
  });
});

describe('permission policy against the reference model', () => {
  it('decides 10,000+ generated (roles, grants, request) cases as the brute-force model does', () => {
    const stats = { runs: 0, invalidPolicies: 0, checks: 0, allowed: 0, refused: 0 };
    fc.assert(
      fc.property(caseArb, (c) => {
        stats.runs++;
        const clock = new ManualClock(START_MS);
        const roles: Record<string, RoleDefinition> = c.roles;
        if (refInvalid(c.roles)) {
          stats.invalidPolicies++;
          expect(() => createPolicy({ roles, acl: c.acl, clock })).toThrow(ConfigError);
          return;
        }
        const policy = createPolicy({ roles, acl: c.acl, clock });
        for (const r of c.requests) {
          clock.advance(r.advanceMs);
          const expected = refAllowed(c, r.principal, r.action, r.target, clock.now());
          stats.checks++;
          if (expected) stats.allowed++;
          else stats.refused++;
          expect(policy.check(r.principal, r.action, r.target)).toBe(expected);
        }
      }),
      { numRuns: 8_000 },
    );
    if (process.env.AGENTBUS_MODEL_REPORT) console.info('permission model:', JSON.stringify(stats));
    expect(stats.checks).toBeGreaterThanOrEqual(10_000);
    // Not a vacuous comparison: both outcomes, and invalid hierarchies, come up often.
    expect(stats.allowed).toBeGreaterThan(stats.checks / 20);
    expect(stats.refused).toBeGreaterThan(stats.checks / 5);
    expect(stats.invalidPolicies).toBeGreaterThan(50);
  });
});

describe('policy configuration', () => {
  it('refuses an inheritance cycle with ConfigError naming it', () => {
    const err = (() => {
      try {
        createPolicy({ roles: { a: { inherits: ['b'] }, b: { inherits: ['c'] }, c: { inherits: ['a'] } } });
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).message).toMatch(/cycle: a → b → c → a/);
    expect(() => createPolicy({ roles: { a: { inherits: ['a'] } } })).toThrow(ConfigError);
  });

  it('refuses an unknown parent role, an unknown action and an invalid pattern, naming the field', () => {
    expect(() => createPolicy({ roles: { a: { inherits: ['ghost'] } } })).toThrow(
      expect.objectContaining({ path: 'roles.a.inherits' }),
    );
    expect(() => createPolicy({ roles: { a: { rules: [{ actions: ['fly' as Action], patterns: 'x' }] } } })).toThrow(
      expect.objectContaining({ path: 'roles.a.rules.0.actions' }),
    );
    expect(() => createPolicy({ acl: [{ subject: 'ann', actions: 'publish', patterns: ['ok', 'a.>.b'] }] })).toThrow(
      expect.objectContaining({ code: 'CONFIG', path: 'acl.0.patterns.1' }),
    );
    expect(() =>
      createPolicy({ acl: [{ subject: 'ann', actions: 'publish', patterns: 'x', expiresAt: 'soon' }] }),
    ).toThrow(expect.objectContaining({ path: 'acl.0.expiresAt' }));
  });

  it('lists a principal’s roles with their ancestors; roles it names that are not defined grant nothing', () => {
    const policy = createPolicy({
      roles: { base: {}, mid: { inherits: ['base'] }, top: { inherits: ['mid'] } },
    });
    expect(policy.rolesOf({ subject: 'x', roles: ['top', 'nope'] }).sort()).toEqual(['base', 'mid', 'top']);
  });

  it('checks dead-letter administration on topics and patterns with dlq-admin', () => {
    const policy = createPolicy({
      roles: { operator: { rules: [{ actions: 'dlq-admin', patterns: 'tasks.>' }] } },
    });
    const op: Principal = { subject: 'ops', roles: ['operator'] };
    expect(policy.check(op, 'dlq-admin', 'tasks.build')).toBe(true);
    expect(policy.check(op, 'dlq-admin', 'tasks.>')).toBe(true);
    expect(policy.check(op, 'dlq-admin', '>')).toBe(false);
    expect(policy.check(op, 'publish', 'tasks.build')).toBe(false);
    expect(() => policy.assert(op, 'dlq-admin', 'billing.>')).toThrow(
      expect.objectContaining({ code: 'FORBIDDEN', data: expect.objectContaining({ action: 'dlq-admin' }) }),
    );
  });

  it('adds and revokes ACL entries at run time', () => {
    const policy = createPolicy();
    const ann: Principal = { subject: 'ann', roles: [] };
    expect(policy.check(ann, 'publish', 'x')).toBe(false);
    const revoke = policy.grant({ subject: 'ann', actions: 'publish', patterns: 'x' });
    expect(policy.check(ann, 'publish', 'x')).toBe(true);
    expect(policy.check({ ...ann, tenant: 't1' }, 'publish', 'x')).toBe(false);
    revoke();
    expect(policy.check(ann, 'publish', 'x')).toBe(false);
  });
});

describe('the subscribe hook of middleware', () => {
  it('sees pattern and group before the transport subscribes, and a refusal leaves no subscription', async () => {
    const transport = memoryTransport();
    const seen: { pattern: string; group: string }[] = [];
    const bus = createBus({
      transport,
      middleware: [
        { name: 'publish-only', publish: (_ctx, next) => next() },
        {
          name: 'gate',
          async subscribe(ctx) {
            seen.push({ ...ctx });
            if (ctx.pattern.startsWith('closed.')) throw new ForbiddenError('closed');
          },
        },
      ],
    });
    await bus.subscribe('open.a', () => {});
    await bus.subscribe('open.b', () => {}, { group: 'g' });
    await expect(bus.subscribe('closed.a', () => {})).rejects.toBeInstanceOf(ForbiddenError);
    expect(seen).toEqual([
      { pattern: 'open.a', group: 'open.a' },
      { pattern: 'open.b', group: 'g' },
      { pattern: 'closed.a', group: 'closed.a' },
    ]);
    expect(await transport.routeCount('closed.a')).toBe(0);
    expect(await transport.routeCount('open.a')).toBe(1);
    await bus.close();
  });

  it('keys inbox ownership by subject and tenant', () => {
    const inboxes = new InboxRegistry();
    expect(inboxes.claim({ subject: 'ann', roles: [], tenant: 't1' }, '_inbox.x')).toBe(true);
    expect(inboxes.claim({ subject: 'ann', roles: ['admin'], tenant: 't1' }, '_inbox.x')).toBe(true);
    expect(inboxes.claim({ subject: 'ann', roles: [] }, '_inbox.x')).toBe(false);
    expect(inboxes.claim({ subject: 'ann', roles: [], tenant: 't2' }, '_inbox.x')).toBe(false);
    inboxes.release('_inbox.x');
    expect(inboxes.owner('_inbox.x')).toBeUndefined();
  });
});

// ---------------------------------------------------------------------------------------------
// Enforcement on the memory transport.

const ROLES: Record<string, RoleDefinition> = {
  agent: {
    rules: [
      { actions: ['publish', 'subscribe'], patterns: 'tasks.>' },
      { effect: 'deny', actions: ['publish', 'subscribe'], patterns: 'tasks.secret.>' },
      { actions: 'subscribe', patterns: 'jobs.*' },
    ],
  },
  worker: { inherits: ['agent'], rules: [{ actions: ['subscribe', 'reply'], patterns: 'svc.>' }] },
  senior: { inherits: ['worker'] },
  client: { rules: [{ actions: 'request', patterns: 'svc.>' }] },
  snoop: { rules: [{ actions: ['subscribe', 'publish', 'request'], patterns: '>' }] },
};

describe('authorization middleware on the memory transport', () => {
  let transport: MemoryTransport;
  const buses: Bus[] = [];

  afterEach(async () => {
    await Promise.all(buses.splice(0).map((b) => b.close()));
    await transport?.close();
  });

  function setup(options: { acl?: AclGrant[]; clock?: ManualClock } = {}) {
    transport = memoryTransport();
    const policy = createPolicy({ roles: ROLES, ...options });
    const busFor = (principal: Principal) => {
      const bus = createBus({
        transport,
        ownsTransport: false,
        source: principal.subject,
        middleware: [authorization({ policy, principal })],
      });
      buses.push(bus);
      return bus;
    };
    /** A bus without authorization that records everything on `pattern`. */
    const observe = async (pattern: string) => {
      const seen: Envelope[] = [];
      const bus = createBus({ transport, ownsTransport: false });
      buses.push(bus);
      await bus.subscribe(pattern, (d) => void seen.push(d.envelope), { group: `observer-${pattern}` });
      return seen;
    };
    return { policy, busFor, observe };
  }

  const rejection = (p: Promise<unknown>) =>
    p.then(
      () => undefined,
      (e: unknown) => e,
    );

  it('refuses a publish to a forbidden topic with ForbiddenError and delivers nothing, legitimate traffic flows', async () => {
    const { busFor, observe } = setup();
    const seen = await observe('>');
    const ann = busFor({ subject: 'ann', roles: ['agent'] });
    const err = await rejection(ann.publish('billing.invoice', { total: 1 }));
    expect(err).toBeInstanceOf(ForbiddenError);
    expect(err).toMatchObject({
      code: 'FORBIDDEN',
      data: { action: 'publish', topic: 'billing.invoice', principal: 'ann', reason: 'not-granted' },
    });
    expect((err as Error).message).toContain('ann may not publish topic billing.invoice');
    const batchErr = await rejection(
      ann.publishBatch([
        { topic: 'tasks.a', data: 1 },
        { topic: 'tasks.secret.plan', data: 2 },
      ]),
    );
    expect(batchErr).toBeInstanceOf(ForbiddenError);
    await ann.publish('tasks.done', 'marker');
    await until(() => seen.some((e) => e.topic === 'tasks.done'), 5_000, 'the allowed publish');
    expect(seen.map((e) => e.topic)).toEqual(['tasks.done']);
  });

  it('refuses a subscription to a forbidden pattern before the transport makes it', async () => {
    const { busFor } = setup();
    const ann = busFor({ subject: 'ann', roles: ['agent'], tenant: 'acme' });
    const err = await rejection(ann.subscribe('billing.>', () => {}));
    expect(err).toBeInstanceOf(ForbiddenError);
    expect(err).toMatchObject({
      data: { action: 'subscribe', pattern: 'billing.>', principal: 'ann', tenant: 'acme', reason: 'not-granted' },
    });
    expect(await transport.routeCount('billing.x')).toBe(0);
  });

  it('refuses a wildcard subscription that reaches partly outside the grant', async () => {
    const { busFor } = setup();
    const ann = busFor({ subject: 'ann', roles: ['agent'] });
    // jobs.* is granted: jobs.> also matches jobs.a.b, and * or > reach everywhere.
    for (const pattern of ['jobs.>', '*.x', '>', 'jobs.*.*']) {
      expect(await rejection(ann.subscribe(pattern, () => {}))).toBeInstanceOf(ForbiddenError);
    }
    const got: unknown[] = [];
    await ann.subscribe('jobs.*', (d) => void got.push(d.data));
    await busFor({ subject: 'ops', roles: ['snoop'] }).publish('jobs.build', 42);
    await until(() => got.length === 1, 5_000, 'the job');
    expect(got).toEqual([42]);
  });

  it('lets an explicit deny override any allow, for topics and for overlapping patterns', async () => {
    const { busFor, observe } = setup({
      acl: [{ subject: 'ann', actions: ['publish', 'subscribe'], patterns: 'tasks.secret.plan' }],
    });
    const seen = await observe('tasks.>');
    const ann = busFor({ subject: 'ann', roles: ['agent'] });
    expect(await rejection(ann.publish('tasks.secret.plan', 1))).toMatchObject({
      data: { action: 'publish', reason: 'denied' },
    });
    // tasks.> is granted but overlaps the denied tasks.secret.>; tasks.* cannot reach it.
    expect(await rejection(ann.subscribe('tasks.>', () => {}))).toMatchObject({
      data: { action: 'subscribe', pattern: 'tasks.>', reason: 'denied' },
    });
    await ann.subscribe('tasks.*', () => {});
    await ann.publish('tasks.open', 2);
    await until(() => seen.length === 1, 5_000, 'the allowed publish');
    expect(seen.map((e) => e.topic)).toEqual(['tasks.open']);
  });

  it('refuses an ACL grant once it has expired', async () => {
    const clock = new ManualClock(START_MS);
    const { busFor, observe } = setup({
      clock,
      acl: [{ subject: 'bob', actions: 'publish', patterns: 'reports.daily', expiresAt: START_MS + 60_000 }],
    });
    const seen = await observe('reports.>');
    const bob = busFor({ subject: 'bob', roles: [] });
    await bob.publish('reports.daily', 'monday');
    clock.advance(60_000);
    expect(await rejection(bob.publish('reports.daily', 'tuesday'))).toMatchObject({
      code: 'FORBIDDEN',
      data: { action: 'publish', topic: 'reports.daily', principal: 'bob', reason: 'not-granted' },
    });
    await until(() => seen.length === 1, 5_000, 'the publish made in time');
    expect(seen.map((e) => e.data)).toEqual(['monday']);
  });

  it('grants a role what its ancestors grant, and what they deny stays denied', async () => {
    const { busFor, observe } = setup();
    const seen = await observe('tasks.>');
    const sam = busFor({ subject: 'sam', roles: ['senior'] }); // senior → worker → agent
    await sam.publish('tasks.review', 'please');
    await sam.subscribe('svc.>', () => {});
    expect(await rejection(sam.publish('tasks.secret.x', 1))).toBeInstanceOf(ForbiddenError);
    await until(() => seen.length === 1, 5_000, 'the inherited publish');
    expect(seen.map((e) => e.topic)).toEqual(['tasks.review']);
  });

  it('answers a request between authorized principals', async () => {
    const { busFor } = setup();
    const worker = busFor({ subject: 'wendy', roles: ['worker'] });
    const ann = busFor({ subject: 'ann', roles: ['client'] });
    await worker.reply<string>('svc.echo', (d) => `echo:${d.data}`);
    expect(await ann.request('svc.echo', 'hi')).toBe('echo:hi');
    // A request needs the request grant (ann's agent role has none on tasks).
    const annAgent = busFor({ subject: 'ann2', roles: ['agent'] });
    expect(await rejection(annAgent.request('svc.echo', 'x', { timeoutMs: 2_000 }))).toMatchObject({
      data: { action: 'request', topic: 'svc.echo', principal: 'ann2' },
    });
  });

  it('keeps reply inboxes private to their requester', async () => {
    const { policy, busFor } = setup();
    const worker = busFor({ subject: 'wendy', roles: ['worker'] });
    let inbox: string | undefined;
    let correlationid: string | undefined;
    await worker.reply<string>('svc.echo', (d) => {
      // Ann's request comes first; later ones (Mallory's) are not recorded.
      inbox ??= d.envelope.replyto;
      correlationid ??= d.envelope.correlationid;
      return d.data;
    });
    const ann = busFor({ subject: 'ann', roles: ['client'] });
    expect(await ann.request('svc.echo', 'hello')).toBe('hello');
    expect(inbox).toMatch(/^_inbox\./);
    expect(inboxRegistryOf(policy).owner(inbox as string)).toEqual({ subject: 'ann', tenant: undefined });

    // Mallory may subscribe and publish anywhere — but not into anyone's inbox.
    const mallory = busFor({ subject: 'mallory', roles: ['snoop', 'client'] });
    expect(await rejection(mallory.subscribe(inbox as string, () => {}))).toMatchObject({
      data: { action: 'subscribe', pattern: inbox, principal: 'mallory', reason: 'not-inbox-owner' },
    });
    for (const pattern of ['_inbox.*', '_inbox.>', '>', '*.>']) {
      expect(await rejection(mallory.subscribe(pattern, () => {}))).toMatchObject({
        data: { action: 'subscribe', pattern, reason: 'reaches-into-inboxes' },
      });
    }
    // A forged reply: the correlation id of a request Mallory never received.
    expect(await rejection(mallory.publish(inbox as string, 'forged', { correlationid }))).toMatchObject({
      data: { action: 'reply', topic: inbox, principal: 'mallory', reason: 'no-such-request' },
    });
    // Nor may a request of hers have the replies written into Ann's inbox.
    expect(await rejection(mallory.publish('svc.echo', 'x', { replyto: inbox, correlationid: 'c1' }))).toMatchObject({
      data: { action: 'request', topic: 'svc.echo', reason: 'replyto-not-own-inbox' },
    });
    // Nor may she join the inbox's group under another pattern, to compete for its replies.
    expect(await rejection(mallory.subscribe('tasks.x', () => {}, { group: inbox as string }))).toMatchObject({
      data: { action: 'subscribe', pattern: 'tasks.x', group: inbox, reason: 'inbox-group' },
    });
    // Her own requests work: she gets her own inbox.
    expect(await mallory.request('svc.echo', 'mine')).toBe('mine');
    // Ann, the owner, may subscribe to her inbox again (another bus of hers).
    await busFor({ subject: 'ann', roles: [] }).subscribe(inbox as string, () => {}, { group: 'ann-again' });
  });

  it('lets a replier answer only the requests it received, and only where it may reply', async () => {
    const { busFor } = setup();
    const ann = busFor({ subject: 'ann', roles: ['client'] });
    // Mute may subscribe to svc.echo but has no reply grant: its reply is refused and the request
    // dead-lettered (a ForbiddenError is not retryable), so Ann's request times out.
    const mute = busFor({ subject: 'mute', roles: ['snoop'] });
    await mute.reply('svc.echo', (d) => d.data);
    expect(await rejection(ann.request('svc.echo', 1, { timeoutMs: 300 }))).toBeInstanceOf(TimeoutError);
    await until(
      async () => (await transport.deadLetters.list({ topic: 'svc.echo' })).some((d) => d.reason === 'forbidden'),
      5_000,
      'the request dead-lettered as forbidden',
    );
  });

  it('lets one reply through per request received', async () => {
    const { busFor } = setup();
    const wendy = busFor({ subject: 'wendy', roles: ['worker'] });
    const second: unknown[] = [];
    await wendy.subscribe('svc.twice', async (d) => {
      const { replyto, correlationid } = d.envelope;
      await wendy.publish(replyto as string, 'first', { correlationid });
      second.push(await rejection(wendy.publish(replyto as string, 'again', { correlationid })));
    });
    const ann = busFor({ subject: 'ann', roles: ['client'] });
    expect(await ann.request('svc.twice', null)).toBe('first');
    await until(() => second.length === 1, 5_000, 'the second reply');
    expect(second[0]).toMatchObject({ data: { action: 'reply', principal: 'wendy', reason: 'no-such-request' } });
  });

  it('lets a replyto that is no inbox name only a topic the sender may publish to', async () => {
    const { busFor, observe } = setup();
    const seen = await observe('tasks.>');
    const ann = busFor({ subject: 'ann', roles: ['agent'] });
    expect(await rejection(ann.publish('tasks.prompt', 'go', { replyto: 'billing.said' }))).toMatchObject({
      data: { action: 'publish', topic: 'tasks.prompt', replyto: 'billing.said', reason: 'replyto-not-publishable' },
    });
    await ann.publish('tasks.prompt', 'go', { replyto: 'tasks.said' });
    await until(() => seen.length === 1, 5_000, 'the prompt');
    expect(seen[0]?.replyto).toBe('tasks.said');
  });

  it('needs no grant for a principal’s own inbox, but an explicit deny still applies', async () => {
    transport = memoryTransport();
    const policy = createPolicy({
      roles: {
        client: { rules: [{ actions: 'request', patterns: 'svc.>' }] },
        muzzled: { rules: [{ effect: 'deny', actions: 'subscribe', patterns: '>' }] },
      },
    });
    const bus = createBus({ transport, ownsTransport: false });
    buses.push(bus);
    await bus.reply('svc.echo', (d) => d.data);
    const muzzled = createBus({
      transport,
      ownsTransport: false,
      middleware: [authorization({ policy, principal: { subject: 'm', roles: ['client', 'muzzled'] } })],
    });
    buses.push(muzzled);
    expect(await rejection(muzzled.request('svc.echo', 1))).toMatchObject({
      data: { action: 'subscribe', reason: 'denied' },
    });
  });

  it('validates its options', () => {
    const policy = createPolicy();
    expect(() => authorization({ policy, principal: { subject: '', roles: [] } })).toThrow(
      expect.objectContaining({ path: 'principal.subject' }),
    );
    expect(() => authorization({ policy: {} as never, principal: { subject: 'a', roles: [] } })).toThrow(ConfigError);
    expect(() =>
      authorization({ policy, principal: { subject: 'a', roles: [] }, inboxes: new InboxRegistry(), replyGraceMs: -1 }),
    ).toThrow(expect.objectContaining({ path: 'replyGraceMs' }));
  });
});
