import type { ServerResponse } from 'node:http';
import { assertTopic, type PublishItem, ValidationError } from '@agentbus/core';
import type { FastifyInstance } from 'fastify';
import type { GatewayContext } from '../context.js';
import { authorizePublish, authorizeRequest, parseMessageInput, publishOptionsOf } from './message-input.js';

/** Most messages one batch publish may carry. */
export const MAX_BATCH = 1_000;

interface TopicParams {
  topic: string;
}

/**
 * `POST /v1/topics/{topic}/messages`: one message (`{ data, … }`) or a batch (`{ messages: [{ data,
 * topic?, … }] }`, all or nothing); 201 once durable. `POST /v1/topics/{topic}/requests`:
 * request-reply, 200 with the reply's data.
 */
export async function registerMessageRoutes(app: FastifyInstance, ctx: GatewayContext): Promise<void> {
  const { bus, auth } = ctx;

  app.post<{ Params: TopicParams; Body: unknown }>('/v1/topics/:topic/messages', async (request, reply) => {
    const { topic } = request.params;
    assertTopic(topic);
    const body = request.body;
    if (typeof body === 'object' && body !== null && !Array.isArray(body) && 'messages' in body) {
      const list = (body as { messages: unknown }).messages;
      if (Object.keys(body).length !== 1)
        throw new ValidationError('a batch body has only `messages`', { data: { path: 'body' } });
      if (!Array.isArray(list) || list.length === 0 || list.length > MAX_BATCH)
        throw new ValidationError(`messages: 1–${MAX_BATCH} items expected`, { data: { path: 'messages' } });
      const items: PublishItem[] = list.map((raw, i) => {
        const input = parseMessageInput(raw, `messages[${i}]`, true);
        const itemTopic = (raw as { topic?: unknown }).topic;
        const t = itemTopic === undefined ? topic : String(itemTopic);
        assertTopic(t);
        authorizePublish(auth, request.caller, t, input);
        return { topic: t, data: input.data, options: publishOptionsOf(input, request.caller, auth) };
      });
      const envelopes = await bus.publishBatch(items);
      return reply.code(201).send({ ids: envelopes.map((e) => e.id) });
    }
    const input = parseMessageInput(body, 'body');
    authorizePublish(auth, request.caller, topic, input);
    const env = await bus.publish(topic, input.data, publishOptionsOf(input, request.caller, auth));
    return reply.code(201).send({ id: env.id, topic: env.topic, time: env.time });
  });

  app.post<{ Params: TopicParams; Body: unknown }>('/v1/topics/:topic/requests', async (request, reply) => {
    const { topic } = request.params;
    assertTopic(topic);
    const body = request.body as Record<string, unknown> | null;
    let timeoutMs = ctx.options.maxRequestTimeoutMs;
    let rest: unknown = body;
    if (typeof body === 'object' && body !== null && !Array.isArray(body) && 'timeoutMs' in body) {
      const { timeoutMs: t, ...others } = body;
      if (typeof t !== 'number' || !Number.isInteger(t) || t < 1 || t > ctx.options.maxRequestTimeoutMs)
        throw new ValidationError(`timeoutMs: an integer 1–${ctx.options.maxRequestTimeoutMs} expected`, {
          data: { path: 'timeoutMs' },
        });
      timeoutMs = t;
      rest = others;
    }
    const input = parseMessageInput(rest, 'body');
    authorizeRequest(auth, request.caller, topic, input);
    const { ttlMs: _ttl, expiresAt: _exp, ...options } = publishOptionsOf(input, request.caller, auth);
    // Not cut short by shutdown: a request in flight is drained like any other (up to drainTimeoutMs).
    const signal = abortOnClose(reply.raw);
    const data = await bus.request(topic, input.data, { ...options, timeoutMs, signal });
    return { data };
  });
}

/** A signal aborted when the client goes away before its answer is ready. */
function abortOnClose(res: ServerResponse): AbortSignal {
  const ac = new AbortController();
  res.once('close', () => {
    if (!res.writableFinished) ac.abort(new Error('client went away'));
  });
  return ac.signal;
}
