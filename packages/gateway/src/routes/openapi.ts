import type { FastifyInstance } from 'fastify';
import type { GatewayContext } from '../context.js';

const error = { $ref: '#/components/schemas/Error' };
const errors = (...codes: number[]) =>
  Object.fromEntries(
    codes.map((c) => [String(c), { description: 'error', content: { 'application/json': { schema: error } } }]),
  );
const json = (schema: object, description = 'ok') => ({ description, content: { 'application/json': { schema } } });
const topicParam = {
  name: 'topic',
  in: 'path',
  required: true,
  schema: { type: 'string' },
  description: 'dot-separated topic',
};
const idParam = {
  name: 'id',
  in: 'path',
  required: true,
  schema: { type: 'string' },
  description: 'dead-letter record id',
};
const filterParams = ['topic', 'group', 'reason', 'since', 'until', 'limit', 'q', 'all'].map((name) => ({
  name,
  in: 'query',
  required: false,
  schema: { type: name === 'limit' ? 'integer' : 'string' },
}));

/** The OpenAPI 3.1 document of the HTTP API (the WebSocket protocol is in docs/protocol.md). */
export function openApiDocument(): Record<string, unknown> {
  return {
    openapi: '3.1.0',
    info: {
      title: 'agentbus gateway',
      version: '1',
      description:
        'HTTP API of the agentbus gateway. Errors are `{ "error": { code, message, retryable, data? } }`; branch on `code`. ' +
        'With auth on, /v1 routes need `Authorization: Bearer <JWT>`. WebSocket protocol: /v1/ws, see docs/protocol.md.',
    },
    components: {
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' } },
      schemas: {
        Error: {
          type: 'object',
          required: ['error'],
          properties: {
            error: {
              type: 'object',
              required: ['code', 'message', 'retryable'],
              properties: {
                code: { type: 'string' },
                message: { type: 'string' },
                retryable: { type: 'boolean' },
                data: {},
              },
            },
          },
        },
        Message: {
          type: 'object',
          required: ['data'],
          additionalProperties: false,
          properties: {
            data: {},
            id: { type: 'string' },
            type: { type: 'string' },
            source: { type: 'string', description: 'ignored with auth on: the token subject is the source' },
            datacontenttype: { type: 'string' },
            correlationid: { type: 'string' },
            causationid: { type: 'string' },
            workflowid: { type: 'string' },
            sequence: { type: 'number' },
            priority: { type: 'integer', minimum: 0, maximum: 9 },
            ttlMs: { type: 'number' },
            expiresAt: { type: 'string', format: 'date-time' },
            replyto: { type: 'string' },
            traceparent: { type: 'string' },
            schemaversion: { type: 'string' },
            headers: { type: 'object', additionalProperties: { type: 'string' } },
          },
        },
        DeadLetter: { type: 'object', description: 'a dead-letter record with the envelope decoded when possible' },
        Health: {
          type: 'object',
          required: ['status'],
          properties: { status: { enum: ['pass', 'warn', 'fail'] }, checks: { type: 'object' } },
        },
      },
    },
    security: [{ bearer: [] }],
    paths: {
      '/v1/topics/{topic}/messages': {
        post: {
          summary: 'Publish one message, or a batch ({ messages: [...] }, all or nothing)',
          parameters: [topicParam],
          requestBody: {
            required: true,
            content: {
              'application/json': {
                schema: {
                  oneOf: [
                    { $ref: '#/components/schemas/Message' },
                    {
                      type: 'object',
                      required: ['messages'],
                      properties: {
                        messages: { type: 'array', maxItems: 1000, items: { $ref: '#/components/schemas/Message' } },
                      },
                    },
                  ],
                },
              },
            },
          },
          responses: {
            '201': json(
              {
                type: 'object',
                properties: { id: { type: 'string' }, ids: { type: 'array', items: { type: 'string' } } },
              },
              'durable',
            ),
            ...errors(400, 401, 403, 413, 415, 429, 503),
          },
        },
      },
      '/v1/topics/{topic}/requests': {
        post: {
          summary: 'Request-reply: publish and wait for one reply',
          parameters: [topicParam],
          requestBody: {
            required: true,
            content: { 'application/json': { schema: { $ref: '#/components/schemas/Message' } } },
          },
          responses: {
            '200': json({ type: 'object', properties: { data: {} } }),
            ...errors(400, 401, 403, 502, 503, 504),
          },
        },
      },
      '/v1/dead-letters': {
        get: {
          summary: 'List dead letters (filters, free-text q)',
          parameters: filterParams,
          responses: { '200': json({ type: 'object' }), ...errors(400, 401, 403) },
        },
        delete: {
          summary: 'Purge dead letters matching a filter (all=true for all)',
          parameters: filterParams,
          responses: { '200': json({ type: 'object' }), ...errors(400, 401, 403) },
        },
      },
      '/v1/dead-letters/replay': {
        post: {
          summary: 'Replay dead letters matching a filter (JSON body)',
          responses: { '200': json({ type: 'object' }), ...errors(400, 401, 403) },
        },
      },
      '/v1/dead-letters/{id}': {
        get: {
          summary: 'One dead letter',
          parameters: [idParam],
          responses: { '200': json({ $ref: '#/components/schemas/DeadLetter' }), ...errors(401, 403, 404) },
        },
        delete: {
          summary: 'Purge one dead letter',
          parameters: [idParam],
          responses: { '200': json({ type: 'object' }), ...errors(401, 403, 404) },
        },
      },
      '/v1/dead-letters/{id}/replay': {
        post: {
          summary: 'Replay one dead letter',
          parameters: [idParam],
          responses: { '200': json({ type: 'object' }), ...errors(401, 403, 404) },
        },
      },
      '/v1/agents': {
        get: { summary: 'Agents in the directory', responses: { '200': json({ type: 'object' }), ...errors(401) } },
      },
      '/v1/connections': {
        get: {
          summary: 'WebSocket clients (dlq-admin)',
          responses: { '200': json({ type: 'object' }), ...errors(401, 403) },
        },
      },
      '/v1/stats': {
        get: {
          summary:
            'Topics, groups with backlog, throughput history (all of them with dlq-admin on >; else scope "caller": the topics and groups the caller may use)',
          responses: { '200': json({ type: 'object' }), ...errors(401) },
        },
      },
      '/v1/sagas': {
        get: {
          summary: 'Sagas in flight (dlq-admin)',
          responses: { '200': json({ type: 'object' }), ...errors(401, 403) },
        },
      },
      '/v1/ws': {
        get: {
          summary: 'WebSocket protocol (upgrade): JSON frames to subscribe, publish, ack/nack, request/reply',
          description:
            'Frames, errors, limits and close codes: docs/protocol.md. The token may come as a bearer header, ?token= or a first auth frame.',
          security: [],
          parameters: [{ name: 'token', in: 'query', required: false, schema: { type: 'string' } }],
          responses: { '101': { description: 'switching protocols' }, ...errors(401, 403) },
        },
      },
      '/health': {
        get: {
          summary: 'Health; deep=1 checks every component',
          security: [],
          parameters: [{ name: 'deep', in: 'query', required: false, schema: { type: 'string' } }],
          responses: {
            '200': {
              description: 'pass or warn',
              content: { 'application/health+json': { schema: { $ref: '#/components/schemas/Health' } } },
            },
            '503': {
              description: 'fail',
              content: { 'application/health+json': { schema: { $ref: '#/components/schemas/Health' } } },
            },
          },
        },
      },
      '/metrics': {
        get: {
          summary: 'Prometheus metrics',
          security: [],
          responses: { '200': { description: 'text exposition format' } },
        },
      },
      '/openapi.json': {
        get: { summary: 'This document', security: [], responses: { '200': json({ type: 'object' }) } },
      },
    },
  };
}

/** Serves {@link openApiDocument} at `/openapi.json`. */
export async function registerOpenApi(app: FastifyInstance, _ctx: GatewayContext): Promise<void> {
  const doc = openApiDocument();
  app.get('/openapi.json', async () => doc);
}
