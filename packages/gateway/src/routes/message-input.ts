import { assertTopic, ForbiddenError, isInboxTopic, type PublishOptions, ValidationError } from '@agentbus/core';
import type { Caller, GatewayAuth } from '../auth.js';

/** A message as a client sends it over HTTP or WebSocket. */
export interface MessageInput {
  readonly data: unknown;
  readonly id?: string;
  readonly type?: string;
  readonly source?: string;
  readonly datacontenttype?: string;
  readonly correlationid?: string;
  readonly causationid?: string;
  readonly workflowid?: string;
  readonly sequence?: number;
  readonly priority?: number;
  readonly ttlMs?: number;
  readonly expiresAt?: string;
  readonly replyto?: string;
  readonly traceparent?: string;
  readonly schemaversion?: string;
  readonly headers?: Readonly<Record<string, string>>;
}

const STRING_FIELDS = [
  'id',
  'type',
  'source',
  'datacontenttype',
  'correlationid',
  'causationid',
  'workflowid',
  'expiresAt',
  'replyto',
  'traceparent',
  'schemaversion',
] as const;
const NUMBER_FIELDS = ['sequence', 'priority', 'ttlMs'] as const;
const KNOWN = new Set<string>(['data', 'headers', 'topic', ...STRING_FIELDS, ...NUMBER_FIELDS]);
const MAX_STRING_FIELD = 1024;
const MAX_HEADERS = 64;
/** Header names the transports and middleware own; a client may not set them. */
const RESERVED_HEADER = /^(x-agentbus-|content-type$|traceparent$|tracestate$)/i;

function fail(path: string, message: string): never {
  throw new ValidationError(`${path}: ${message}`, { data: { path } });
}

/**
 * Checks a client's message object and turns it into publish options. Unknown fields, wrong
 * types, reserved headers and missing `data` are ValidationErrors naming the field (`data.path`).
 * `allowTopic`: the object may carry its own `topic` (batch items, WebSocket frames).
 */
export function parseMessageInput(value: unknown, path: string, allowTopic = false): MessageInput {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) fail(path, 'must be an object');
  const obj = value as Record<string, unknown>;
  for (const key of Object.keys(obj)) {
    if (!KNOWN.has(key) || (key === 'topic' && !allowTopic)) fail(`${path}.${key}`, 'unknown field');
  }
  if (!('data' in obj) || obj.data === undefined) fail(`${path}.data`, 'is required');
  for (const f of STRING_FIELDS) {
    const v = obj[f];
    if (v === undefined) continue;
    if (typeof v !== 'string' || v === '' || v.length > MAX_STRING_FIELD)
      fail(`${path}.${f}`, `must be a non-empty string of at most ${MAX_STRING_FIELD} characters`);
  }
  for (const f of NUMBER_FIELDS) {
    const v = obj[f];
    if (v !== undefined && (typeof v !== 'number' || !Number.isFinite(v))) fail(`${path}.${f}`, 'must be a number');
    if (f === 'sequence' && v !== undefined && !Number.isSafeInteger(v)) fail(`${path}.${f}`, 'must be an integer');
  }
  const headers = obj.headers;
  if (headers !== undefined) {
    if (typeof headers !== 'object' || headers === null || Array.isArray(headers))
      fail(`${path}.headers`, 'must be an object of strings');
    const entries = Object.entries(headers);
    if (entries.length > MAX_HEADERS) fail(`${path}.headers`, `at most ${MAX_HEADERS} headers`);
    for (const [k, v] of entries) {
      if (typeof v !== 'string' || v.length > 4096)
        fail(`${path}.headers.${k}`, 'must be a string (≤ 4096 characters)');
      if (k === '' || k.length > 128 || RESERVED_HEADER.test(k)) fail(`${path}.headers.${k}`, 'is reserved or invalid');
    }
  }
  return obj as unknown as MessageInput;
}

/**
 * Publish options for a client's message. The `source` is the caller's subject when auth is on
 * (a client cannot speak for another agent); without auth the client may name one.
 */
export function publishOptionsOf(input: MessageInput, caller: Caller, auth: GatewayAuth): PublishOptions {
  const { data: _data, source, ...rest } = input as MessageInput & { topic?: string };
  delete (rest as { topic?: string }).topic;
  return { ...rest, source: auth.enabled ? caller.principal.subject : (source ?? 'gateway') };
}

/**
 * Checks that `caller` may publish `input` on `topic`: never a reply inbox, `publish` on the topic, and a `replyto`
 * must be a topic the caller may publish to itself, never a reply inbox (only the gateway's own
 * request-reply uses those).
 */
export function authorizePublish(auth: GatewayAuth, caller: Caller, topic: string, input: MessageInput): void {
  refuseInbox(topic, 'publish');
  auth.authorize(caller, 'publish', topic);
  if (input.replyto !== undefined) {
    try {
      assertTopic(input.replyto);
    } catch {
      fail('replyto', 'must be a concrete topic');
    }
    if (isInboxTopic(input.replyto)) fail('replyto', 'may not be a reply inbox');
    auth.authorize(caller, 'publish', input.replyto);
  }
}

/**
 * A reply inbox takes only replies to requests its owner made: over the gateway, the WebSocket
 * `reply` op (which needs `reply` rights on the request's topic), never a publish or a request —
 * anyone who saw a request's replyto could otherwise forge its answer.
 */
function refuseInbox(topic: string, action: 'publish' | 'request'): void {
  if (isInboxTopic(topic))
    throw new ForbiddenError(`reply inboxes cannot be sent to with ${action}: answer a request with the reply op`, {
      data: { action, topic, reason: 'inbox' },
    });
}

/**
 * Checks that `caller` may send `input` as a request on `topic` (HTTP and WebSocket alike): never
 * to a reply inbox, and the fields request-reply sets itself — the message id (the reply's
 * correlation id), `replyto`, `correlationid` — are the gateway's to choose.
 */
export function authorizeRequest(
  auth: GatewayAuth,
  caller: Caller,
  topic: string,
  input: MessageInput,
  idField: 'id' | 'msgId' = 'id',
): void {
  refuseInbox(topic, 'request');
  for (const [field, path] of [
    ['id', idField],
    ['replyto', 'replyto'],
    ['correlationid', 'correlationid'],
  ] as const)
    if (input[field] !== undefined)
      throw new ValidationError(`${path}: set by the gateway for a request`, { data: { path } });
  auth.authorize(caller, 'request', topic);
}
