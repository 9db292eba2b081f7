import { badFrame, WsError } from './ws-error.js';
import { WS_LIMITS } from './ws-protocol.js';

/** A reply's error as a client sends it (rebuilt on the requester's side as the same class). */
export interface ClientReplyError {
  readonly code: string;
  readonly message: string;
  readonly retryable?: boolean;
  readonly data?: unknown;
}

/** Message fields of `publish` and `request` frames, checked later by `parseMessageInput`. */
export type MessageFields = Readonly<Record<string, unknown>>;

/** A frame a client sends, checked field by field. */
export type ClientFrame =
  | { readonly op: 'auth'; readonly id?: string; readonly token: string }
  | {
      readonly op: 'subscribe';
      readonly id?: string;
      readonly topic: string;
      readonly group?: string;
      readonly durable?: string;
      readonly prefetch?: number;
    }
  | { readonly op: 'unsubscribe'; readonly id?: string; readonly sub: string }
  | { readonly op: 'ack'; readonly id?: string; readonly delivery: string }
  | {
      readonly op: 'nack';
      readonly id?: string;
      readonly delivery: string;
      readonly delayMs?: number;
      readonly error?: string;
    }
  | { readonly op: 'deadLetter'; readonly id?: string; readonly delivery: string; readonly reason?: string }
  | { readonly op: 'publish'; readonly id?: string; readonly topic: string; readonly message: MessageFields }
  | {
      readonly op: 'request';
      readonly id?: string;
      readonly topic: string;
      readonly timeoutMs?: number;
      readonly message: MessageFields;
    }
  | {
      readonly op: 'reply';
      readonly id?: string;
      readonly delivery: string;
      readonly data?: unknown;
      readonly error?: ClientReplyError;
    }
  | { readonly op: 'ping'; readonly id?: string };

/** The outcome of parsing one text frame: the frame, or the error to answer with (and the id to echo). */
export interface ParsedFrame {
  readonly id?: string | undefined;
  readonly frame?: ClientFrame;
  readonly error?: WsError;
}

type Obj = Record<string, unknown>;

/** The fields each op accepts (besides `op` and `id`); publish and request also take message fields. */
const FIELDS: Readonly<Record<ClientFrame['op'], readonly string[]>> = Object.freeze({
  auth: ['token'],
  subscribe: ['topic', 'group', 'durable', 'prefetch'],
  unsubscribe: ['sub'],
  ack: ['delivery'],
  nack: ['delivery', 'delayMs', 'error'],
  deadLetter: ['delivery', 'reason'],
  publish: ['topic'],
  request: ['topic', 'timeoutMs'],
  reply: ['delivery', 'data', 'error'],
  ping: [],
});

const OPS = new Set(Object.keys(FIELDS));

/** Rejects nesting deeper than `maxDepth` and `__proto__` keys anywhere, iteratively (no recursion to overflow). */
function checkShape(root: unknown): void {
  const stack: [unknown, number][] = [[root, 0]];
  while (stack.length > 0) {
    const [value, depth] = stack.pop() as [unknown, number];
    if (typeof value !== 'object' || value === null) continue;
    if (depth >= WS_LIMITS.maxDepth) throw badFrame('', `nested deeper than ${WS_LIMITS.maxDepth} levels`);
    if (Array.isArray(value)) {
      for (const v of value) stack.push([v, depth + 1]);
      continue;
    }
    for (const key of Object.keys(value)) {
      if (key === '__proto__') throw badFrame('', 'the key __proto__ is not allowed');
      stack.push([(value as Obj)[key], depth + 1]);
    }
  }
}

function str(obj: Obj, key: string, required: boolean, max = 1024): string | undefined {
  const v = obj[key];
  if (v === undefined) {
    if (required) throw badFrame(key, 'is required');
    return undefined;
  }
  if (typeof v !== 'string' || v === '' || v.length > max)
    throw badFrame(key, `must be a non-empty string of at most ${max} characters`);
  return v;
}

function int(obj: Obj, key: string, min: number, max: number): number | undefined {
  const v = obj[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max)
    throw badFrame(key, `must be an integer ${min}–${max}`);
  return v;
}

function replyError(v: unknown): ClientReplyError {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw badFrame('error', 'must be an object');
  const e = v as Obj;
  for (const k of Object.keys(e))
    if (!['code', 'message', 'retryable', 'data'].includes(k)) throw badFrame(`error.${k}`, 'unknown field');
  if (typeof e.code !== 'string' || e.code === '' || e.code.length > 64)
    throw badFrame('error.code', 'must be a non-empty string of at most 64 characters');
  if (typeof e.message !== 'string' || e.message.length > WS_LIMITS.maxReasonLength)
    throw badFrame('error.message', `must be a string of at most ${WS_LIMITS.maxReasonLength} characters`);
  if (e.retryable !== undefined && typeof e.retryable !== 'boolean')
    throw badFrame('error.retryable', 'must be a boolean');
  return {
    code: e.code,
    message: e.message,
    ...(e.retryable === undefined ? {} : { retryable: e.retryable }),
    ...(e.data === undefined ? {} : { data: e.data }),
  };
}

function fieldsOf(op: ClientFrame['op'], obj: Obj, id: string | undefined): ClientFrame {
  const base = id === undefined ? { op } : { op, id };
  switch (op) {
    case 'auth':
      return { ...base, op, token: str(obj, 'token', true, 16_384) as string };
    case 'subscribe': {
      const group = str(obj, 'group', false, WS_LIMITS.maxGroupLength);
      const durable = str(obj, 'durable', false, WS_LIMITS.maxGroupLength);
      const prefetch = int(obj, 'prefetch', 1, WS_LIMITS.maxPrefetch);
      return {
        ...base,
        op,
        topic: str(obj, 'topic', true, 255) as string,
        ...(group === undefined ? {} : { group }),
        ...(durable === undefined ? {} : { durable }),
        ...(prefetch === undefined ? {} : { prefetch }),
      };
    }
    case 'unsubscribe':
      return { ...base, op, sub: str(obj, 'sub', true, 128) as string };
    case 'ack':
      return { ...base, op, delivery: str(obj, 'delivery', true, 128) as string };
    case 'nack': {
      const delayMs = int(obj, 'delayMs', 0, WS_LIMITS.maxNackDelayMs);
      const error = str(obj, 'error', false, WS_LIMITS.maxReasonLength);
      return {
        ...base,
        op,
        delivery: str(obj, 'delivery', true, 128) as string,
        ...(delayMs === undefined ? {} : { delayMs }),
        ...(error === undefined ? {} : { error }),
      };
    }
    case 'deadLetter': {
      const reason = str(obj, 'reason', false, WS_LIMITS.maxReasonLength);
      return { ...base, op, delivery: str(obj, 'delivery', true, 128) as string, ...(reason ? { reason } : {}) };
    }
    case 'publish':
    case 'request': {
      const topic = str(obj, 'topic', true, 255) as string;
      const timeoutMs = op === 'request' ? int(obj, 'timeoutMs', 1, Number.MAX_SAFE_INTEGER) : undefined;
      const { op: _op, id: _id, topic: _topic, timeoutMs: _t, ...message } = obj;
      if (op === 'publish' && _t !== undefined) throw badFrame('timeoutMs', 'unknown field');
      if (op === 'publish') return { ...base, op, topic, message };
      return { ...base, op, topic, message, ...(timeoutMs === undefined ? {} : { timeoutMs }) };
    }
    case 'reply': {
      const delivery = str(obj, 'delivery', true, 128) as string;
      if (obj.error !== undefined) {
        if (obj.data !== undefined) throw badFrame('data', 'a reply has either data or error');
        return { ...base, op, delivery, error: replyError(obj.error) };
      }
      if (!('data' in obj)) throw badFrame('data', 'is required (or error)');
      return { ...base, op, delivery, data: obj.data };
    }
    case 'ping':
      return { ...base, op };
  }
}

/**
 * Parses one text frame: JSON, an object, a known `op`, each field of the right type and no
 * unknown field (message fields of publish/request are checked later, as over HTTP). Never
 * throws: a bad frame comes back as `error` (INVALID_JSON, BAD_FRAME, UNKNOWN_OP) with the frame's
 * `id` when it had a valid one.
 */
export function parseFrame(text: string): ParsedFrame {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return { error: new WsError('INVALID_JSON', 'the frame is not valid JSON') };
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    return { error: badFrame('', 'a frame must be a JSON object') };
  const obj = value as Obj;
  let id: string | undefined;
  try {
    id = str(obj, 'id', false, WS_LIMITS.maxIdLength);
  } catch (err) {
    return { error: err as WsError };
  }
  try {
    checkShape(obj);
    const op = obj.op;
    if (typeof op !== 'string') throw badFrame('op', 'must be a string');
    if (!OPS.has(op)) throw new WsError('UNKNOWN_OP', `unknown op ${JSON.stringify(op.slice(0, 64))}`, { op });
    const known = FIELDS[op as ClientFrame['op']];
    if (op !== 'publish' && op !== 'request') {
      for (const key of Object.keys(obj))
        if (key !== 'op' && key !== 'id' && !known.includes(key)) throw badFrame(key, 'unknown field');
    }
    return { id, frame: fieldsOf(op as ClientFrame['op'], obj, id) };
  } catch (err) {
    return { id, error: err instanceof WsError ? err : badFrame('', 'malformed frame') };
  }
}
