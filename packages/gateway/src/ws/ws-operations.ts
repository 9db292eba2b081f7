import { createHash } from 'node:crypto';
import {
  assertPattern,
  assertTopic,
  ForbiddenError,
  REPLY_ERROR_TYPE,
  REPLY_TYPE,
  ValidationError,
  type WireError,
} from '@agentbus/core';
import type { Caller } from '../auth.js';
import {
  authorizePublish,
  authorizeRequest,
  type MessageInput,
  parseMessageInput,
  publishOptionsOf,
} from '../routes/message-input.js';
import type { WsConnection } from './ws-connection.js';
import { WsError } from './ws-error.js';
import type { ClientFrame, MessageFields } from './ws-frame-parser.js';
import { WS_LIMITS } from './ws-protocol.js';
import { WsSubscription } from './ws-subscription.js';

type Frame<K extends ClientFrame['op']> = Extract<ClientFrame, { op: K }>;

/** Consumer group and durable names: topic characters plus `.`; a leading `_` is reserved for the gateway. */
const GROUP_NAME = /^[A-Za-z0-9\-:@$][A-Za-z0-9_\-:@$.]*$/;
/** The longest group name, scoped or not (transports build queue names from it). */
const MAX_GROUP_NAME = 200;
/** A subject (with no tenant) that can stand as itself at the head of a group name. */
const PLAIN_SUBJECT = /^(?!u-)[A-Za-z0-9\-:@$]{1,64}$/; // `u-…` is the hashed owners' namespace

/**
 * The consumer group a WebSocket client's `group`/`durable` name stands for. With auth on, the
 * name is scoped to the caller — `_u.<subject>.<name>` (a hash of tenant and subject instead
 * when the subject is not plain) — because a group is one queue: whoever joins it receives what
 * every member subscribed to, and a name given by a client must not reach a group of another
 * agent or service. The head `_u.` is the gateway's (clients cannot name a group starting with
 * `_`), so a scoped name never meets a backend's group, whatever the subject is called. Clients
 * with the same subject share their groups (competing consumers).
 */
export function scopedGroupName(caller: Caller, name: string, authEnabled: boolean): string {
  if (!authEnabled) return name;
  const prefix = scopedGroupPrefix(caller);
  const scoped = `${prefix}${name}`;
  if (scoped.length > MAX_GROUP_NAME)
    throw new ValidationError(`group: at most ${MAX_GROUP_NAME} characters with its owner (${prefix}) in front`, {
      data: { path: 'group', limit: MAX_GROUP_NAME },
    });
  return scoped;
}

/** What the group names scoped to `caller` start with: `_u.` and its subject, or `u-<hash>` of tenant and subject, and `.`. */
export function scopedGroupPrefix(caller: Caller): string {
  const { subject, tenant } = caller.principal;
  const owner =
    tenant === undefined && PLAIN_SUBJECT.test(subject)
      ? subject
      : `u-${createHash('sha256')
          .update(JSON.stringify([tenant ?? null, subject]))
          .digest('base64url')
          .slice(0, 22)}`;
  return `_u.${owner}.`;
}

/** assertTopic / assertPattern with `data.path` naming the frame field. */
function checkTopic(check: (topic: string) => void, topic: string): void {
  try {
    check(topic);
  } catch (err) {
    throw new ValidationError((err as Error).message, { data: { path: 'topic' } });
  }
}

function idOf(frame: ClientFrame): { id?: string } {
  return frame.id === undefined ? {} : { id: frame.id };
}

/**
 * The message fields of a publish/request frame, checked as over HTTP. The envelope id travels as
 * `msgId` (a frame's `id` is the client's correlation id); error paths name frame fields.
 */
function messageInputOf(fields: MessageFields): MessageInput {
  const { msgId, id: _id, ...rest } = fields;
  const value = msgId === undefined ? rest : { ...rest, id: msgId };
  try {
    return parseMessageInput(value, 'frame');
  } catch (err) {
    if (!(err instanceof ValidationError)) throw err;
    const path = String((err.data as { path?: unknown } | undefined)?.path ?? '');
    const field = path === 'frame.id' ? 'msgId' : path.replace(/^frame\.?/, '');
    const message = err.message.startsWith(`${path}:`)
      ? `${field || 'frame'}${err.message.slice(path.length)}`
      : err.message;
    throw new ValidationError(message, { data: { path: field } });
  }
}

async function subscribe(conn: WsConnection, caller: Caller, frame: Frame<'subscribe'>): Promise<void> {
  const { ctx } = conn;
  if (conn.subscriptions.size + conn.subscriptionsOpening >= WS_LIMITS.maxSubscriptions)
    throw new ValidationError(`at most ${WS_LIMITS.maxSubscriptions} subscriptions per connection`, {
      data: { path: 'topic', limit: WS_LIMITS.maxSubscriptions },
    });
  const pattern = frame.topic;
  checkTopic(assertPattern, pattern);
  if (pattern.startsWith('_inbox.'))
    throw new ForbiddenError('reply inboxes cannot be subscribed to', {
      data: { action: 'subscribe', topic: pattern, principal: caller.principal.subject },
    });
  ctx.auth.authorize(caller, 'subscribe', pattern);
  const { durable, group } = frame;
  if (durable !== undefined && group !== undefined && durable !== group)
    throw new ValidationError('group: a durable subscription uses its durable name as group', {
      data: { path: 'group' },
    });
  for (const [path, name] of [
    ['durable', durable],
    ['group', group],
  ] as const) {
    if (name !== undefined && !GROUP_NAME.test(name))
      throw new ValidationError(`${path}: letters, digits and - : @ $ _ . only, not starting with _`, {
        data: { path },
      });
  }
  const id = conn.nextSubscriptionId();
  const given = durable ?? group;
  const named = given === undefined ? undefined : scopedGroupName(caller, given, ctx.auth.enabled);
  const groupName = named ?? `_ws.${conn.id}.${id}`;
  // A slot is taken before the first await: subscribes sent in one burst cannot pass the limit together.
  conn.subscriptionsOpening++;
  let sub: WsSubscription;
  try {
    sub = await WsSubscription.open(
      ctx.bus,
      {
        id,
        pattern,
        group: groupName,
        durable: named !== undefined,
        prefetch: frame.prefetch ?? WS_LIMITS.defaultPrefetch,
        // An ephemeral group is gone with its subscription: so is its activity.
        ...(named === undefined ? { onClosed: () => ctx.activity.forget(groupName) } : {}),
      },
      conn,
    );
  } finally {
    conn.subscriptionsOpening--;
  }
  if (conn.closed) {
    await sub.close();
    return;
  }
  conn.subscriptions.set(id, sub);
  ctx.activity.watch(sub.group, pattern);
  conn.send({ op: 'subscribed', ...idOf(frame), sub: id, group: sub.group });
  sub.start();
}

async function unsubscribe(conn: WsConnection, frame: Frame<'unsubscribe'>): Promise<void> {
  const sub = conn.subscriptions.get(frame.sub);
  if (!sub) throw new WsError('NOT_FOUND', `no subscription ${frame.sub} on this connection`, { sub: frame.sub });
  conn.subscriptions.delete(frame.sub);
  await sub.close();
  conn.send({ op: 'unsubscribed', ...idOf(frame), sub: frame.sub });
}

function unknownDelivery(delivery: string): WsError {
  return new WsError('NOT_FOUND', `no unsettled delivery ${delivery} on this connection`, { delivery });
}

async function settle(conn: WsConnection, frame: Frame<'ack' | 'nack' | 'deadLetter'>): Promise<void> {
  const p = conn.delivery(frame.delivery, true);
  if (!p) throw unknownDelivery(frame.delivery);
  try {
    if (frame.op === 'ack') await p.delivery.ack();
    else if (frame.op === 'nack')
      await p.delivery.nack({
        delayMs: frame.delayMs ?? 0,
        ...(frame.error === undefined ? {} : { error: frame.error }),
      });
    else
      await p.delivery.deadLetter(frame.reason ?? 'rejected-by-client', {
        error: frame.reason ?? 'rejected by the WebSocket client',
      });
  } finally {
    p.done();
  }
}

async function publish(conn: WsConnection, caller: Caller, frame: Frame<'publish'>): Promise<void> {
  const { bus, auth } = conn.ctx;
  checkTopic(assertTopic, frame.topic);
  const input = messageInputOf(frame.message);
  authorizePublish(auth, caller, frame.topic, input);
  const env = await bus.publish(frame.topic, input.data, publishOptionsOf(input, caller, auth));
  conn.send({ op: 'published', ...idOf(frame), msgId: env.id });
}

async function request(conn: WsConnection, caller: Caller, frame: Frame<'request'>): Promise<void> {
  const { bus, auth, options } = conn.ctx;
  checkTopic(assertTopic, frame.topic);
  const max = options.maxRequestTimeoutMs;
  const timeoutMs = frame.timeoutMs ?? max;
  if (timeoutMs > max)
    throw new ValidationError(`timeoutMs: an integer 1–${max} expected`, { data: { path: 'timeoutMs' } });
  const input = messageInputOf(frame.message);
  authorizeRequest(auth, caller, frame.topic, input, 'msgId');
  const { ttlMs: _ttl, expiresAt: _exp, ...publishOptions } = publishOptionsOf(input, caller, auth);
  const signal = AbortSignal.any([conn.ctx.closing, conn.signal]);
  const data = await bus.request(frame.topic, input.data, { ...publishOptions, timeoutMs, signal });
  conn.send({ op: 'reply', ...idOf(frame), data });
}

/** Answers a request the client received: publishes to its `replyto` as core's request-reply does, then acks it. */
async function reply(conn: WsConnection, caller: Caller, frame: Frame<'reply'>): Promise<void> {
  const { bus, auth } = conn.ctx;
  const pending = conn.delivery(frame.delivery, false);
  if (!pending) throw unknownDelivery(frame.delivery);
  const env = pending.delivery.envelope;
  if (env.replyto === undefined)
    throw new ValidationError('delivery: not a request (it has no replyto)', { data: { path: 'delivery' } });
  auth.authorize(caller, 'reply', env.topic);
  const p = conn.delivery(frame.delivery, true);
  if (!p) throw unknownDelivery(frame.delivery); // settled meanwhile by another frame
  try {
    const error: WireError | undefined = frame.error === undefined ? undefined : { retryable: false, ...frame.error };
    await bus.publish(env.replyto, error ?? frame.data, {
      correlationid: env.correlationid ?? env.id,
      causationid: env.id,
      type: error === undefined ? REPLY_TYPE : REPLY_ERROR_TYPE,
      source: auth.enabled ? caller.principal.subject : 'gateway',
    });
  } catch (err) {
    await p.delivery.nack({ delayMs: 0, error: 'the reply could not be published' }).finally(p.done);
    throw err;
  }
  await p.delivery.ack().finally(p.done);
}

/** Runs one authenticated client frame (everything but `auth`), answering on `conn`. */
export async function runOperation(conn: WsConnection, caller: Caller, frame: ClientFrame): Promise<void> {
  switch (frame.op) {
    case 'subscribe':
      return subscribe(conn, caller, frame);
    case 'unsubscribe':
      return unsubscribe(conn, frame);
    case 'ack':
    case 'nack':
    case 'deadLetter':
      return settle(conn, frame);
    case 'publish':
      return publish(conn, caller, frame);
    case 'request':
      return request(conn, caller, frame);
    case 'reply':
      return reply(conn, caller, frame);
    case 'ping':
      conn.send({ op: 'pong', ...idOf(frame) });
      return;
    case 'auth':
      throw new WsError('BAD_FRAME', 'auth is handled by the connection', { path: 'op' });
  }
}
