import {
  assertPattern,
  type DeadLetterFilter,
  type DeadLetterView,
  ValidationError,
  viewDeadLetter,
} from '@agentbus/core';
import type { FastifyInstance } from 'fastify';
import type { GatewayContext } from '../context.js';
import { HttpError } from '../http-errors.js';

/** Largest `limit` of a list; search scans at most this many records too. */
export const MAX_DEAD_LETTER_LIST = 1_000;

const FILTER_KEYS = new Set(['topic', 'group', 'reason', 'since', 'until', 'limit', 'q', 'all']);

function timeOf(value: unknown, path: string): number | undefined {
  if (value === undefined || value === '') return undefined;
  const s = String(value);
  const ms = /^\d+$/.test(s) ? Number(s) : Date.parse(s);
  if (!Number.isFinite(ms))
    throw new ValidationError(`${path}: epoch ms or an RFC 3339 time expected`, { data: { path } });
  return ms;
}

function stringOf(value: unknown, path: string): string | undefined {
  if (value === undefined || value === '') return undefined;
  if (typeof value !== 'string' || value.length > 255)
    throw new ValidationError(`${path}: a string of at most 255 characters expected`, { data: { path } });
  return value;
}

/** A filter from query parameters or a JSON body; unknown keys are refused. */
export function parseDeadLetterFilter(source: unknown): DeadLetterFilter & { q?: string; all?: boolean } {
  const obj = (source ?? {}) as Record<string, unknown>;
  if (typeof obj !== 'object' || Array.isArray(obj))
    throw new ValidationError('filter: an object expected', { data: { path: 'filter' } });
  for (const k of Object.keys(obj))
    if (!FILTER_KEYS.has(k)) throw new ValidationError(`${k}: unknown filter`, { data: { path: k } });
  const topic = stringOf(obj.topic, 'topic');
  if (topic !== undefined) assertPattern(topic);
  let limit: number | undefined;
  if (obj.limit !== undefined && obj.limit !== '') {
    limit = Number(obj.limit);
    if (!Number.isInteger(limit) || limit < 1 || limit > MAX_DEAD_LETTER_LIST)
      throw new ValidationError(`limit: an integer 1–${MAX_DEAD_LETTER_LIST} expected`, { data: { path: 'limit' } });
  }
  const all = obj.all === true || obj.all === 'true' || obj.all === '1';
  const filter = {
    ...(topic === undefined ? {} : { topic }),
    ...(stringOf(obj.group, 'group') === undefined ? {} : { group: obj.group as string }),
    ...(stringOf(obj.reason, 'reason') === undefined ? {} : { reason: obj.reason as string }),
    ...(timeOf(obj.since, 'since') === undefined ? {} : { sinceMs: timeOf(obj.since, 'since') as number }),
    ...(timeOf(obj.until, 'until') === undefined ? {} : { untilMs: timeOf(obj.until, 'until') as number }),
    ...(limit === undefined ? {} : { limit }),
    ...(stringOf(obj.q, 'q') === undefined ? {} : { q: (obj.q as string).toLowerCase() }),
    ...(all ? { all } : {}),
  };
  return filter;
}

/** Whether a record matches a free-text search (id, topic, group, reason, error, message id, payload). */
export function matchesSearch(view: DeadLetterView, q: string): boolean {
  if (q === '') return true;
  const hay = [
    view.id,
    view.topic,
    view.group,
    view.reason,
    view.error ?? '',
    view.messageId,
    JSON.stringify(view.envelope?.data ?? view.bodyBase64 ?? ''),
  ]
    .join('\n')
    .toLowerCase();
  return hay.includes(q);
}

/**
 * Dead letters: list (filters, free-text `q`), get, replay and purge, by id or by filter. Every
 * operation needs `dlq-admin` on the topic concerned (the filter's pattern, `>` without one).
 * A purge or replay by filter with no filter at all must say `all: true`.
 */
export async function registerDeadLetterRoutes(app: FastifyInstance, ctx: GatewayContext): Promise<void> {
  const store = ctx.bus.transport.deadLetters;
  const { auth } = ctx;

  app.get('/v1/dead-letters', async (request) => {
    const filter = parseDeadLetterFilter(request.query);
    auth.authorize(request.caller, 'dlq-admin', filter.topic ?? '>');
    const { q, all: _all, ...storeFilter } = filter;
    const limit = filter.limit ?? 100;
    const records = await store.list(q ? { ...storeFilter, limit: MAX_DEAD_LETTER_LIST } : { ...storeFilter, limit });
    let items = records.map(viewDeadLetter);
    if (q) items = items.filter((v) => matchesSearch(v, q)).slice(0, limit);
    return { items };
  });

  async function recordOr404(request: { caller: import('../auth.js').Caller }, id: string) {
    const record = await store.get(id);
    if (!record) throw new HttpError('NOT_FOUND', `no dead letter ${id}`, { id });
    auth.authorize(request.caller, 'dlq-admin', record.message.topic);
    return record;
  }

  app.get<{ Params: { id: string } }>('/v1/dead-letters/:id', async (request) => {
    return viewDeadLetter(await recordOr404(request, request.params.id));
  });

  app.post<{ Params: { id: string } }>('/v1/dead-letters/:id/replay', async (request) => {
    if (request.params.id === 'replay') throw new HttpError('NOT_FOUND', 'no dead letter replay');
    await recordOr404(request, request.params.id);
    return { replayed: await store.replay(request.params.id) };
  });

  app.post('/v1/dead-letters/replay', async (request) => {
    const filter = parseDeadLetterFilter(request.body);
    const { q, all, ...storeFilter } = filter;
    if (q !== undefined) throw new ValidationError('q: search applies to list only', { data: { path: 'q' } });
    if (Object.keys(storeFilter).length === 0 && !all)
      throw new ValidationError('an empty filter replays everything: say `all: true`', { data: { path: 'all' } });
    auth.authorize(request.caller, 'dlq-admin', filter.topic ?? '>');
    return { replayed: await store.replay(storeFilter) };
  });

  app.delete<{ Params: { id: string } }>('/v1/dead-letters/:id', async (request) => {
    await recordOr404(request, request.params.id);
    return { purged: await store.purge(request.params.id) };
  });

  app.delete('/v1/dead-letters', async (request) => {
    const filter = parseDeadLetterFilter(request.query);
    const { q, all, ...storeFilter } = filter;
    if (q !== undefined) throw new ValidationError('q: search applies to list only', { data: { path: 'q' } });
    if (Object.keys(storeFilter).length === 0 && !all)
      throw new ValidationError('an empty filter purges everything: add `all=true`', { data: { path: 'all' } });
    auth.authorize(request.caller, 'dlq-admin', filter.topic ?? '>');
    return { purged: await store.purge(Object.keys(storeFilter).length === 0 ? undefined : storeFilter) };
  });
}
