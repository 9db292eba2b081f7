import { type Envelope, expiresAtMs } from '../envelope.js';
import { ConfigError } from '../errors.js';
import type { ConsumeContext, Middleware, Next, PublishContext, SubscribeContext } from '../middleware.js';
import { nonNegativeNumber, positiveInteger } from '../validate.js';
import { forbidden, type Policy, type Principal, patternsOverlap, principalName } from './permissions.js';

/** The first segment of reply inbox topics (`_inbox.<id>`, made by request-reply). */
export const INBOX_SEGMENT = '_inbox';
const INBOX_NAMESPACE = `${INBOX_SEGMENT}.>`;

/** Whether `topic` (a concrete topic) lies in the reply inbox namespace. */
export function isInboxTopic(topic: string): boolean {
  return topic.startsWith(`${INBOX_SEGMENT}.`);
}

/**
 * Who owns which reply inbox. The first principal to subscribe to a concrete `_inbox.…` topic
 * owns it; from then on only identities with the same subject and tenant may subscribe to it or
 * name it as the `replyto` of a request. Inbox ids are random and a requester subscribes to its
 * inbox before it sends any request naming it, so nobody else learns an id before it is owned.
 * Entries stay until released: one per request-reply inbox, i.e. per bus that made requests.
 */
export class InboxRegistry {
  readonly #owners = new Map<string, { readonly subject: string; readonly tenant: string | undefined }>();

  /** The owner of `topic`, if any. */
  owner(topic: string): Pick<Principal, 'subject' | 'tenant'> | undefined {
    return this.#owners.get(topic);
  }

  /** Makes `principal` the owner of `topic` unless someone else owns it; whether `principal` owns it now. */
  claim(principal: Principal, topic: string): boolean {
    const owner = this.#owners.get(topic);
    if (owner === undefined) {
      this.#owners.set(topic, { subject: principal.subject, tenant: principal.tenant });
      return true;
    }
    return owns(owner, principal);
  }

  /** Forgets the owner of `topic` (its inbox is gone for good). */
  release(topic: string): void {
    this.#owners.delete(topic);
  }

  get size(): number {
    return this.#owners.size;
  }
}

function owns(owner: Pick<Principal, 'subject' | 'tenant'>, principal: Principal): boolean {
  return owner.subject === principal.subject && owner.tenant === principal.tenant;
}

/** One registry per policy, so every authorization middleware built on a policy shares it. */
const registries = new WeakMap<Policy, InboxRegistry>();

/**
 * The consumer groups subscribed to through the authorization middleware of a policy: each
 * group's patterns and members. A group is one queue fed by every pattern any member subscribed
 * with, so every member receives messages of every pattern of the group.
 */
interface GroupMembership {
  readonly patterns: Set<string>;
  readonly members: Set<Principal>;
}
const groupsByPolicy = new WeakMap<Policy, Map<string, GroupMembership>>();
/**
 * Groups remembered per policy at most; the one joined longest ago is forgotten first (a process
 * making a fresh ephemeral group per watched task would otherwise grow without bound). A
 * forgotten group is checked as a new one when next joined.
 */
export const MAX_REMEMBERED_GROUPS = 100_000;

function groupsOf(policy: Policy): Map<string, GroupMembership> {
  let groups = groupsByPolicy.get(policy);
  if (groups === undefined) {
    groups = new Map();
    groupsByPolicy.set(policy, groups);
  }
  return groups;
}

/** The inbox registry the authorization middleware of `policy` share by default. */
export function inboxRegistryOf(policy: Policy): InboxRegistry {
  let registry = registries.get(policy);
  if (registry === undefined) {
    registry = new InboxRegistry();
    registries.set(policy, registry);
  }
  return registry;
}

export interface AuthorizationOptions {
  readonly policy: Policy;
  /** Who this bus acts for: every publish and subscribe through it is checked for this identity. */
  readonly principal: Principal;
  /** Who owns which reply inbox. Default: the registry of `policy` ({@link inboxRegistryOf}). */
  readonly inboxes?: InboxRegistry;
  /** How long after a received request expires a reply to it is still let through. */
  readonly replyGraceMs?: number;
  /** How long a request without expiry may be replied to. */
  readonly replyWindowMs?: number;
  /** Received requests remembered for their reply at most (the oldest are forgotten first). */
  readonly maxPendingReplies?: number;
  readonly name?: string;
}

export const AUTHORIZATION_DEFAULTS = Object.freeze({
  replyGraceMs: 30_000,
  replyWindowMs: 5 * 60_000,
  maxPendingReplies: 100_000,
  name: 'authorization',
});

/** The authorization middleware, with the request bookkeeping that tests and metrics may read. */
export interface AuthorizationMiddleware extends Middleware {
  readonly principal: Principal;
  /** Received requests whose reply would be let through (until they expire). */
  readonly pendingReplies: number;
}

/**
 * Enforces `policy` for one principal on a bus (in-process agents), before anything reaches the
 * transport. Add it first, so that nothing else runs for a refused message. A refusal is a
 * {@link ForbiddenError} whose `data` holds `action`, `topic` (`pattern` for subscribe),
 * `principal` (the subject), `tenant` when there is one, and `reason`.
 *
 * - publish (`bus.publish`, `publishBatch`: a refused envelope refuses the whole batch):
 *   - to a reply inbox: a reply. Let through only with the `correlationid` of a request this
 *     principal received (see consume) whose `replyto` is that inbox, not expired, and when the
 *     principal may `reply` on that request's topic; once, as a request gets one reply.
 *   - with a reply inbox as `replyto`: a request (`bus.request`), checked as `request` on its
 *     topic; the inbox must be one this principal owns, so that replies never land in another's.
 *   - anything else: checked as `publish` on its topic. A `replyto` that is no inbox (a group
 *     chat's turn topic) must be a topic the principal may `publish` to: who answers writes
 *     there, and must not be steered to where the sender could not write itself.
 * - subscribe (`bus.subscribe`, `reply`, the inbox of `request`): a pattern that can match a
 *   reply inbox is refused unless it is one concrete inbox topic, owned by this principal or
 *   owned by nobody yet (the principal then becomes its owner); no grant is needed for it, a
 *   deny still applies. Any other pattern is checked as `subscribe`: the allow rules must
 *   together match every topic of the pattern and no deny rule may overlap it. A group named
 *   as an inbox topic is refused unless it is the inbox subscribed to. A group is one queue fed
 *   by every pattern its members subscribed with: joining a group (of this policy's middleware,
 *   in this process) needs the right to subscribe to each of its patterns
 *   (`group-pattern-not-granted`), and a pattern new to a group must be one each of its members
 *   may subscribe to (`group-member-not-granted`). The groups joined longest ago are forgotten
 *   beyond {@link MAX_REMEMBERED_GROUPS}.
 * - consume: a delivered request with a reply inbox as `replyto` is remembered (inbox and
 *   correlation id, or the request id when it has none) until it is replied to, or until it
 *   expires plus `replyGraceMs` (`replyWindowMs` after delivery when it has no expiry); at most
 *   `maxPendingReplies` of them, the oldest forgotten first.
 *
 * Grants are evaluated on every publish and subscribe; a subscription already made is not
 * revisited when a grant expires. Dead-letter operations are checked by their caller with
 * `policy.assert(principal, 'dlq-admin', topicOrPattern)`.
 */
export function authorization(options: AuthorizationOptions): AuthorizationMiddleware {
  const D = AUTHORIZATION_DEFAULTS;
  const policy = options?.policy;
  if (typeof policy?.decide !== 'function') throw new ConfigError('must be a Policy', { path: 'policy' });
  const principal = validPrincipal(options.principal);
  const inboxes = options.inboxes ?? inboxRegistryOf(policy);
  if (typeof inboxes?.claim !== 'function') throw new ConfigError('must be an InboxRegistry', { path: 'inboxes' });
  const graceMs = nonNegativeNumber(options.replyGraceMs ?? D.replyGraceMs, 'replyGraceMs');
  const windowMs = positiveInteger(options.replyWindowMs ?? D.replyWindowMs, 'replyWindowMs');
  const maxPending = positiveInteger(options.maxPendingReplies ?? D.maxPendingReplies, 'maxPendingReplies');
  const name = options.name ?? D.name;
  if (typeof name !== 'string' || name === '') throw new ConfigError('must be a non-empty string', { path: 'name' });
  const clock = policy.clock;
  const groups = groupsOf(policy);

  /** Requests received, by `replyto` and correlation id: their topic and until when a reply may go. */
  const received = new Map<string, { readonly topic: string; readonly untilMs: number }>();
  const keyOf = (inbox: string, correlationid: string) => `${inbox}\u0000${correlationid}`;

  const remember = (env: Envelope, inbox: string): void => {
    const now = clock.now();
    const exp = expiresAtMs(env);
    const untilMs = exp === undefined ? now + windowMs : exp + graceMs;
    if (untilMs <= now) return;
    const key = keyOf(inbox, env.correlationid ?? env.id);
    received.delete(key); // re-inserted at the end: a redelivery counts as new
    // Forget expired ones at the front (roughly the oldest) and the oldest beyond the bound.
    for (const [k, r] of received) {
      if (r.untilMs > now && received.size < maxPending) break;
      received.delete(k);
    }
    received.set(key, { topic: env.topic, untilMs });
  };

  const checkPublish = (env: Envelope): void => {
    const topic = env.topic;
    if (isInboxTopic(topic)) {
      const correlationid = env.correlationid;
      const key = correlationid === undefined ? undefined : keyOf(topic, correlationid);
      const request = key === undefined ? undefined : received.get(key);
      if (key === undefined || request === undefined || request.untilMs <= clock.now()) {
        throw forbidden(principal, 'reply', topic, 'no-such-request');
      }
      const d = policy.decide(principal, 'reply', request.topic);
      if (!d.allowed) throw forbidden(principal, 'reply', topic, d.reason, { requestTopic: request.topic });
      received.delete(key); // one reply per request: a redelivered request is remembered again
      return;
    }
    const replyto = env.replyto;
    if (replyto !== undefined && isInboxTopic(replyto)) {
      const d = policy.decide(principal, 'request', topic);
      if (!d.allowed) throw forbidden(principal, 'request', topic, d.reason);
      const owner = inboxes.owner(replyto);
      if (owner === undefined || !owns(owner, principal)) {
        throw forbidden(principal, 'request', topic, 'replyto-not-own-inbox', { replyto });
      }
      return;
    }
    const d = policy.decide(principal, 'publish', topic);
    if (!d.allowed) throw forbidden(principal, 'publish', topic, d.reason);
    if (replyto !== undefined && !policy.check(principal, 'publish', replyto)) {
      throw forbidden(principal, 'publish', topic, 'replyto-not-publishable', { replyto });
    }
  };

  return {
    name,
    principal,
    get pendingReplies() {
      return received.size;
    },
    publish(ctx: PublishContext, next: Next): Promise<void> {
      try {
        checkPublish(ctx.envelope);
      } catch (err) {
        return Promise.reject(err);
      }
      return next();
    },
    consume(ctx: ConsumeContext, next: Next): Promise<void> {
      const env = ctx.envelope;
      const replyto = env.replyto;
      if (replyto === undefined || !isInboxTopic(replyto)) return next();
      remember(env, replyto);
      // A request the rest of the chain refused (a verifier placed after this hook, a schema
      // check) must not leave a reply allowed; one whose handler failed is remembered again when
      // it is redelivered.
      return next().catch((err: unknown) => {
        received.delete(keyOf(replyto, env.correlationid ?? env.id));
        throw err;
      });
    },
    subscribe(ctx: SubscribeContext): void {
      const { pattern, group } = ctx;
      if (patternsOverlap(pattern, INBOX_NAMESPACE)) {
        if (pattern.includes('*') || pattern.includes('>')) {
          throw forbidden(principal, 'subscribe', pattern, 'reaches-into-inboxes');
        }
        const d = policy.decide(principal, 'subscribe', pattern);
        if (d.reason === 'denied') throw forbidden(principal, 'subscribe', pattern, 'denied');
        if (!inboxes.claim(principal, pattern)) throw forbidden(principal, 'subscribe', pattern, 'not-inbox-owner');
      } else {
        const d = policy.decide(principal, 'subscribe', pattern);
        if (!d.allowed) throw forbidden(principal, 'subscribe', pattern, d.reason);
      }
      // A group named as an inbox is that inbox's own: joining it would share in its replies.
      if (group !== pattern && isInboxTopic(group)) {
        throw forbidden(principal, 'subscribe', pattern, 'inbox-group', { group });
      }
      // Every member of a group receives what every pattern of the group matches: joining needs
      // the right to subscribe to each of the group's patterns, and a new pattern must be one
      // every member may subscribe to.
      const membership = groups.get(group);
      if (membership !== undefined) {
        for (const p of membership.patterns) {
          if (p !== pattern && !policy.check(principal, 'subscribe', p)) {
            throw forbidden(principal, 'subscribe', pattern, 'group-pattern-not-granted', { group, groupPattern: p });
          }
        }
        if (!membership.patterns.has(pattern)) {
          for (const m of membership.members) {
            if (m !== principal && !policy.check(m, 'subscribe', pattern)) {
              throw forbidden(principal, 'subscribe', pattern, 'group-member-not-granted', {
                group,
                member: principalName(m),
              });
            }
          }
        }
        membership.patterns.add(pattern);
        membership.members.add(principal);
        groups.delete(group); // re-inserted last: the most recently joined
        groups.set(group, membership);
      } else {
        if (groups.size >= MAX_REMEMBERED_GROUPS) groups.delete(groups.keys().next().value as string);
        groups.set(group, { patterns: new Set([pattern]), members: new Set([principal]) });
      }
    },
  };
}

function validPrincipal(p: Principal | undefined): Principal {
  if (p === null || typeof p !== 'object') throw new ConfigError('must be a Principal', { path: 'principal' });
  if (typeof p.subject !== 'string' || p.subject === '') {
    throw new ConfigError('must be a non-empty string', { path: 'principal.subject' });
  }
  if (!Array.isArray(p.roles) || p.roles.some((r) => typeof r !== 'string')) {
    throw new ConfigError('must be a list of role names', { path: 'principal.roles' });
  }
  if (p.tenant !== undefined && typeof p.tenant !== 'string') {
    throw new ConfigError('must be a string', { path: 'principal.tenant' });
  }
  return Object.freeze({
    subject: p.subject,
    roles: Object.freeze([...p.roles]),
    ...(p.tenant === undefined ? {} : { tenant: p.tenant }),
  });
}
