import { until } from '@agentbus/conformance';
import { type Bus, createBus, type Envelope, memoryTransport } from '@agentbus/core';
import { createGateway, type Gateway, parseTraceparent } from '@agentbus/gateway';
import { context, SpanKind, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  type ReadableSpan,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { jwtPair, post, uniqueTopic } from './gateway-fixtures.js';

const exporter = new InMemorySpanExporter();
const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
const contextManager = new AsyncLocalStorageContextManager();

let bus: Bus;
let gateway: Gateway;
let url: string;

beforeAll(async () => {
  context.setGlobalContextManager(contextManager.enable());
  trace.setGlobalTracerProvider(provider);
  bus = createBus({ transport: memoryTransport() });
  gateway = await createGateway({ bus, logger: false, dashboard: false });
  url = await gateway.listen({ port: 0 });
});

afterAll(async () => {
  await gateway?.close();
  await bus?.close();
  await provider.shutdown();
  trace.disable();
  context.disable();
});

beforeEach(() => exporter.reset());

const TRACE_ID = '4bf92f3577b34da6a3ce929d0e0e4736';
const HEADER_SPAN_ID = '00f067aa0ba902b7';
const TRACEPARENT = `00-${TRACE_ID}-${HEADER_SPAN_ID}-01`;

function spans(): ReadableSpan[] {
  return exporter.getFinishedSpans();
}
function one(predicate: (s: ReadableSpan) => boolean, what: string): ReadableSpan {
  const found = spans().filter(predicate);
  expect(found, what).toHaveLength(1);
  return found[0] as ReadableSpan;
}
const parentOf = (s: ReadableSpan) => s.parentSpanContext?.spanId;
const idOf = (s: ReadableSpan) => s.spanContext().spanId;

describe('tracing through the gateway and the bus', () => {
  it('puts an HTTP request-reply, its handler and the reply in the trace of the incoming traceparent', async () => {
    const topic = uniqueTopic('svc');
    let seenByHandler: Envelope | undefined;
    const responder = await bus.reply(topic, (d) => {
      seenByHandler = d.envelope;
      return { echoed: d.data };
    });
    const res = await post(`${url}/v1/topics/${topic}/requests`, { data: { q: 1 } }, { traceparent: TRACEPARENT });
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ data: { echoed: { q: 1 } } });
    // The inbox consumer span ends just after the HTTP answer may have been sent.
    await until(() => spans().length >= 5, 10_000, 'five spans');

    const server = one((s) => s.kind === SpanKind.SERVER, 'server span');
    const requestPublish = one(
      (s) => s.kind === SpanKind.PRODUCER && s.attributes['messaging.destination.name'] === topic,
      'request producer span',
    );
    const handler = one(
      (s) => s.kind === SpanKind.CONSUMER && s.attributes['messaging.destination.name'] === topic,
      'handler consumer span',
    );
    const replyTopic = seenByHandler?.replyto as string;
    expect(replyTopic).toMatch(/^_inbox\./);
    const replyPublish = one(
      (s) => s.kind === SpanKind.PRODUCER && s.attributes['messaging.destination.name'] === replyTopic,
      'reply producer span',
    );
    const inbox = one(
      (s) => s.kind === SpanKind.CONSUMER && s.attributes['messaging.destination.name'] === replyTopic,
      'reply inbox consumer span',
    );

    for (const s of spans()) expect(s.spanContext().traceId, s.name).toBe(TRACE_ID);
    expect(spans()).toHaveLength(5);
    expect(parentOf(server)).toBe(HEADER_SPAN_ID);
    expect(parentOf(requestPublish)).toBe(idOf(server));
    expect(parentOf(handler)).toBe(idOf(requestPublish));
    expect(parentOf(replyPublish)).toBe(idOf(handler));
    expect(parentOf(inbox)).toBe(idOf(replyPublish));

    expect(server.name).toBe('POST /v1/topics/:topic/requests');
    expect(server.attributes).toMatchObject({
      'http.request.method': 'POST',
      'http.route': '/v1/topics/:topic/requests',
      'url.path': `/v1/topics/${topic}/requests`,
      'http.response.status_code': 200,
    });
    expect(requestPublish.name).toBe(`${topic} publish`);
    expect(requestPublish.attributes).toMatchObject({
      'messaging.system': 'agentbus',
      'messaging.operation.type': 'send',
      'messaging.operation.name': 'publish',
      'messaging.destination.name': topic,
      'messaging.message.id': seenByHandler?.id,
      'messaging.message.conversation_id': seenByHandler?.correlationid,
      'messaging.agentbus.transport': 'memory',
    });
    expect(handler.name).toBe(`${topic} process`);
    expect(handler.attributes).toMatchObject({
      'messaging.system': 'agentbus',
      'messaging.operation.type': 'process',
      'messaging.destination.name': topic,
      'messaging.destination.subscription.name': topic,
      'messaging.consumer.group.name': topic,
      'messaging.message.id': seenByHandler?.id,
      'messaging.message.conversation_id': seenByHandler?.correlationid,
      'messaging.agentbus.attempt': 1,
      'messaging.agentbus.settlement': 'ack',
    });
    expect(inbox.attributes).toMatchObject({
      'messaging.consumer.group.name': replyTopic,
      'messaging.message.conversation_id': seenByHandler?.correlationid,
    });
    // The envelope the handler got carries the producer span as its traceparent.
    expect(parseTraceparent(seenByHandler?.traceparent)).toMatchObject({
      traceId: TRACE_ID,
      spanId: idOf(requestPublish),
    });
    await responder.close();
  });

  it('traces a plain HTTP publish to a subscriber handler, the handler failing once then succeeding', async () => {
    const topic = uniqueTopic('orders');
    const received: Envelope[] = [];
    const nativeHeaders: string[] = [];
    const sub = await bus.subscribe(
      topic,
      (d) => {
        received.push(d.envelope);
        nativeHeaders.push(d.transportHeaders.traceparent as string);
        if (d.attempt === 1) throw new Error('model busy');
      },
      { group: 'billing', backoff: { initialDelayMs: 1, maxDelayMs: 1 } },
    );
    const res = await post(`${url}/v1/topics/${topic}/messages`, { data: { n: 1 }, correlationid: 'order-7' });
    expect(res.status).toBe(201);
    await until(() => spans().filter((s) => s.kind === SpanKind.CONSUMER).length === 2, 10_000, 'two attempts');

    const server = one((s) => s.kind === SpanKind.SERVER, 'server span');
    const publish = one((s) => s.kind === SpanKind.PRODUCER, 'producer span');
    const attempts = spans()
      .filter((s) => s.kind === SpanKind.CONSUMER)
      .sort(
        (a, b) =>
          Number(a.attributes['messaging.agentbus.attempt']) - Number(b.attributes['messaging.agentbus.attempt']),
      );
    const traceId = server.spanContext().traceId;
    expect(parentOf(server)).toBeUndefined(); // no traceparent header: a new trace
    expect(parentOf(publish)).toBe(idOf(server));
    expect(publish.attributes).toMatchObject({
      'messaging.message.id': res.body.id,
      'messaging.message.conversation_id': 'order-7',
    });
    for (const [i, s] of attempts.entries()) {
      expect(s.spanContext().traceId).toBe(traceId);
      expect(parentOf(s)).toBe(idOf(publish));
      expect(s.attributes).toMatchObject({
        'messaging.consumer.group.name': 'billing',
        'messaging.agentbus.attempt': i + 1,
        'messaging.message.id': res.body.id,
      });
    }
    const [failed, succeeded] = attempts as [ReadableSpan, ReadableSpan];
    expect(failed.status.code).toBe(2); // ERROR
    expect(failed.attributes).toMatchObject({ 'messaging.agentbus.settlement': 'nack', 'error.type': 'Error' });
    expect(failed.events.map((e) => e.name)).toEqual(['exception']);
    expect(succeeded.status.code).toBe(0); // UNSET
    expect(succeeded.attributes['messaging.agentbus.settlement']).toBe('ack');
    // The traceparent also travels in the transport's native headers (the bus copies it).
    expect(received[0]?.traceparent).toBe(`00-${traceId}-${idOf(publish)}-01`);
    expect(nativeHeaders[0]).toBe(received[0]?.traceparent);
    await sub.close();
  });

  it('continues the trace of an envelope published with a traceparent and no active span', async () => {
    const topic = uniqueTopic('direct');
    const got: Envelope[] = [];
    const sub = await bus.subscribe(topic, (d) => {
      got.push(d.envelope);
    });
    const sent = await bus.publish(topic, 1, { traceparent: TRACEPARENT });
    await until(() => spans().some((s) => s.kind === SpanKind.CONSUMER), 10_000, 'consumer span');
    const publish = one((s) => s.kind === SpanKind.PRODUCER, 'producer span');
    expect(publish.spanContext().traceId).toBe(TRACE_ID);
    expect(parentOf(publish)).toBe(HEADER_SPAN_ID);
    expect(sent.traceparent).toBe(`00-${TRACE_ID}-${idOf(publish)}-01`);
    expect(got[0]?.traceparent).toBe(sent.traceparent);
    await sub.close();
  });

  it('gives a request refused for its token a server span with status 401 in the incoming trace', async () => {
    const secured = await createGateway({
      bus,
      logger: false,
      dashboard: false,
      auth: { verifier: jwtPair().verifier },
    });
    try {
      const securedUrl = await secured.listen({ port: 0 });
      const res = await post(`${securedUrl}/v1/topics/orders.a/messages`, { data: 1 }, { traceparent: TRACEPARENT });
      expect(res.status).toBe(401);
      await until(() => spans().some((s) => s.kind === SpanKind.SERVER), 10_000, 'server span');
      const server = one((s) => s.kind === SpanKind.SERVER, 'server span');
      expect(server.spanContext().traceId).toBe(TRACE_ID);
      expect(server.attributes['http.response.status_code']).toBe(401);
      // Nothing was published in that trace (the gateway's own agent directory may publish in others).
      expect(spans().filter((s) => s.spanContext().traceId === TRACE_ID && s.kind !== SpanKind.SERVER)).toEqual([]);
    } finally {
      await secured.close();
    }
  });
});
