import { ValidationError } from './errors.js';

/**
 * An immutable event, CloudEvents 1.0 compatible (structured JSON mode), with agentbus's
 * extensions in CloudEvents lower-case style. `source` + `id` is the deduplication key.
 * Per-delivery state (attempt, lease) never lives here: see `Delivery`.
 */
export interface Envelope<T = unknown> {
  readonly specversion: '1.0';
  /** Sortable unique id (UUIDv7 by default). */
  readonly id: string;
  /** The sending agent or service. */
  readonly source: string;
  /** Event type, e.g. `task.assigned`. Defaults to the topic. */
  readonly type: string;
  /** RFC 3339 time of creation. */
  readonly time: string;
  readonly datacontenttype?: string;
  readonly data: T;
  /** The topic the event was published on (dot-separated segments). */
  readonly topic: string;
  readonly correlationid?: string;
  readonly causationid?: string;
  readonly workflowid?: string;
  readonly sequence?: number;
  /** 0 (lowest) … 9 (highest); 4 when absent. */
  readonly priority?: number;
  /** RFC 3339 time after which the event must not be delivered. */
  readonly expiresat?: string;
  readonly replyto?: string;
  readonly traceparent?: string;
  readonly schemaversion?: string;
  /** Free string headers. */
  readonly headers?: Readonly<Record<string, string>>;
}

/** What a publisher may set; the bus fills in id, time, source and specversion. */
export interface PublishOptions {
  readonly id?: string;
  readonly source?: string;
  readonly type?: string;
  readonly datacontenttype?: string;
  readonly correlationid?: string;
  readonly causationid?: string;
  readonly workflowid?: string;
  readonly sequence?: number;
  readonly priority?: number;
  /** Absolute expiry (Date, epoch ms or RFC 3339). */
  readonly expiresAt?: Date | number | string;
  /** Relative expiry from now. */
  readonly ttlMs?: number;
  readonly replyto?: string;
  readonly traceparent?: string;
  readonly schemaversion?: string;
  readonly headers?: Readonly<Record<string, string>>;
}

export const DEFAULT_PRIORITY = 4;
export const MAX_PRIORITY = 9;

const SEGMENT = /^[A-Za-z0-9_\-:@$]+$/;

/** Topics found valid lately: most batches publish to a few topics, each checked twice (bus, transport). */
const validTopics = new Set<string>();
const VALID_TOPICS_CACHED = 1_000;

/** Throws ValidationError unless `topic` is a concrete topic: dot-separated, no wildcards. */
export function assertTopic(topic: string): void {
  if (validTopics.has(topic)) return;
  checkTopic(topic);
  if (validTopics.size >= VALID_TOPICS_CACHED) validTopics.clear();
  validTopics.add(topic);
}

function checkTopic(topic: string): void {
  if (typeof topic !== 'string' || topic.length === 0 || topic.length > 255) {
    throw new ValidationError(`invalid topic ${JSON.stringify(topic)}: 1–255 characters expected`);
  }
  for (const seg of topic.split('.')) {
    if (!SEGMENT.test(seg)) {
      throw new ValidationError(
        `invalid topic ${JSON.stringify(topic)}: segments are non-empty [A-Za-z0-9_-:@$], no wildcards`,
      );
    }
  }
}

/** Throws ValidationError unless `pattern` is a valid subscription pattern (`*` one segment, `>` the rest). */
export function assertPattern(pattern: string): void {
  if (typeof pattern !== 'string' || pattern.length === 0 || pattern.length > 255) {
    throw new ValidationError(`invalid pattern ${JSON.stringify(pattern)}: 1–255 characters expected`);
  }
  const segs = pattern.split('.');
  segs.forEach((seg, i) => {
    if (seg === '*') return;
    if (seg === '>' && i === segs.length - 1) return;
    if (!SEGMENT.test(seg)) {
      throw new ValidationError(
        `invalid pattern ${JSON.stringify(pattern)}: use concrete segments, '*' for one segment and a final '>' for the rest`,
      );
    }
  });
}

/** Whether `topic` matches `pattern` (`*` = exactly one segment, trailing `>` = one or more). */
export function topicMatches(pattern: string, topic: string): boolean {
  if (pattern === topic) return true;
  const p = pattern.split('.');
  const t = topic.split('.');
  for (let i = 0; i < p.length; i++) {
    const seg = p[i];
    if (seg === '>') return t.length > i;
    if (i >= t.length) return false;
    if (seg !== '*' && seg !== t[i]) return false;
  }
  return p.length === t.length;
}

export function assertPriority(priority: number): void {
  if (!Number.isInteger(priority) || priority < 0 || priority > MAX_PRIORITY) {
    throw new ValidationError(`invalid priority ${priority}: an integer 0–9 expected`);
  }
}

/** Epoch ms of `expiresat`, or undefined. */
export function expiresAtMs(env: Pick<Envelope, 'expiresat'>): number | undefined {
  if (env.expiresat === undefined) return undefined;
  const ms = Date.parse(env.expiresat);
  return Number.isNaN(ms) ? undefined : ms;
}

function toMs(value: Date | number | string, field: string): number {
  const ms = value instanceof Date ? value.getTime() : typeof value === 'number' ? value : Date.parse(value);
  if (!Number.isFinite(ms)) throw new ValidationError(`invalid ${field}: ${String(value)}`);
  return ms;
}

let lastIsoMs = Number.NaN;
let lastIso = '';
/** RFC 3339 time; cached per millisecond because Date#toISOString is costly on the publish path. */
function isoTime(ms: number): string {
  if (ms !== lastIsoMs) {
    lastIso = new Date(ms).toISOString();
    lastIsoMs = ms;
  }
  return lastIso;
}

export interface EnvelopeDefaults {
  readonly id: string;
  readonly source: string;
  readonly nowMs: number;
}

/** Builds a new envelope for `topic` and `data`; validates topic, priority and expiry. */
export function createEnvelope<T>(
  topic: string,
  data: T,
  options: PublishOptions,
  defaults: EnvelopeDefaults,
): Envelope<T> {
  assertTopic(topic);
  const priority = options.priority;
  if (priority !== undefined) assertPriority(priority);
  let expiresat: string | undefined;
  if (options.expiresAt !== undefined) expiresat = new Date(toMs(options.expiresAt, 'expiresAt')).toISOString();
  else if (options.ttlMs !== undefined) {
    if (!(options.ttlMs > 0)) throw new ValidationError(`invalid ttlMs ${options.ttlMs}: a positive number expected`);
    expiresat = new Date(defaults.nowMs + options.ttlMs).toISOString();
  }
  const env: Record<string, unknown> = {
    specversion: '1.0',
    id: options.id ?? defaults.id,
    source: options.source ?? defaults.source,
    type: options.type ?? topic,
    time: isoTime(defaults.nowMs),
    datacontenttype: options.datacontenttype ?? 'application/json',
    data,
    topic,
  };
  // Only set optional attributes that have a value, so round trips are exact.
  if (options.correlationid !== undefined) env.correlationid = options.correlationid;
  if (options.causationid !== undefined) env.causationid = options.causationid;
  if (options.workflowid !== undefined) env.workflowid = options.workflowid;
  if (options.sequence !== undefined) env.sequence = options.sequence;
  if (priority !== undefined) env.priority = priority;
  if (expiresat !== undefined) env.expiresat = expiresat;
  if (options.replyto !== undefined) env.replyto = options.replyto;
  if (options.traceparent !== undefined) env.traceparent = options.traceparent;
  if (options.schemaversion !== undefined) env.schemaversion = options.schemaversion;
  if (options.headers !== undefined) env.headers = { ...options.headers };
  // What a consumer's decoder would refuse is refused here, where the caller can see why.
  assertAttributeTypes(env);
  return Object.freeze(env) as unknown as Envelope<T>;
}

/** A copy of `env` with some attributes changed (envelopes are immutable). */
export function withAttributes<T>(env: Envelope<T>, changes: Partial<Omit<Envelope<T>, 'specversion'>>): Envelope<T> {
  return Object.freeze({ ...env, ...changes }) as Envelope<T>;
}

const OPTIONAL_STRING_ATTRIBUTES = [
  'datacontenttype',
  'correlationid',
  'causationid',
  'workflowid',
  'expiresat',
  'replyto',
  'traceparent',
  'schemaversion',
] as const;

/**
 * The optional attributes have one type each: a codec that can carry others (msgpack's
 * timestamps) must not hand a handler a Date where the contract says string. ValidationError.
 */
function assertAttributeTypes(v: Record<string, unknown>): void {
  for (const key of OPTIONAL_STRING_ATTRIBUTES) {
    if (v[key] !== undefined && typeof v[key] !== 'string') {
      throw new ValidationError(`envelope attribute '${key}' must be a string`);
    }
  }
  if (v.sequence !== undefined && !(typeof v.sequence === 'number' && Number.isSafeInteger(v.sequence))) {
    throw new ValidationError(`envelope attribute 'sequence' must be an integer`);
  }
}

/** Checks the structure of a decoded value and returns it as an envelope, or throws ValidationError. */
export function parseEnvelope(value: unknown): Envelope {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ValidationError('envelope is not an object');
  }
  const v = value as Record<string, unknown>;
  if (v.specversion !== '1.0') throw new ValidationError(`unsupported specversion ${String(v.specversion)}`);
  for (const key of ['id', 'source', 'type', 'time', 'topic'] as const) {
    if (typeof v[key] !== 'string' || (v[key] as string).length === 0) {
      throw new ValidationError(`envelope attribute '${key}' must be a non-empty string`);
    }
  }
  assertAttributeTypes(v);
  if (v.priority !== undefined) assertPriority(v.priority as number);
  if (v.headers !== undefined) {
    if (typeof v.headers !== 'object' || v.headers === null) throw new ValidationError('headers must be an object');
    for (const h of Object.values(v.headers)) {
      if (typeof h !== 'string') throw new ValidationError('header values must be strings');
    }
  }
  return Object.freeze(v) as unknown as Envelope;
}
