import { Writable } from 'node:stream';
import { until } from '@agentbus/conformance';
import { type Bus, createBus, memoryTransport, UnrecoverableError } from '@agentbus/core';
import { createGateway, type Gateway, pinoBusLogger, traceMixin } from '@agentbus/gateway';
import { context, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Json, post, uniqueTopic } from './gateway-fixtures.js';

/** A pino destination that keeps every JSON line it is given. */
class LineSink extends Writable {
  readonly lines: Json[] = [];
  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: () => void): void {
    for (const line of chunk.toString('utf8').split('\n')) if (line !== '') this.lines.push(JSON.parse(line));
    callback();
  }
  find(msg: string): Json[] {
    return this.lines.filter((l) => l.msg === msg);
  }
}

const TRACE_ID = '0af7651916cd43dd8448eb211c80319c';
const PARENT_SPAN_ID = 'b7ad6b7169203331';
const TRACEPARENT = `00-${TRACE_ID}-${PARENT_SPAN_ID}-01`;

interface Running {
  bus: Bus;
  gateway: Gateway;
  url: string;
  sink: LineSink;
}

async function start(): Promise<Running> {
  const sink = new LineSink();
  const log = pino({ level: 'debug', mixin: traceMixin }, sink);
  const bus = createBus({ transport: memoryTransport(), logger: pinoBusLogger(log.child({ component: 'bus' })) });
  const gateway = await createGateway({ bus, logger: log, dashboard: false });
  const url = await gateway.listen({ port: 0 });
  return { bus, gateway, url, sink };
}

async function stop(r: Running | undefined): Promise<void> {
  await r?.gateway.close();
  await r?.bus.close();
}

/** Subscribes a handler that refuses every message as unrecoverable, then publishes one over HTTP. */
async function deadLetterOne(r: Running, headers: Record<string, string>, body: Json) {
  const topic = uniqueTopic('invoices');
  const sub = await r.bus.subscribe(
    topic,
    () => {
      throw new UnrecoverableError('invoice has no customer');
    },
    { group: 'accounting' },
  );
  const res = await post(`${r.url}/v1/topics/${topic}/messages`, body, headers);
  expect(res.status).toBe(201);
  await until(() => r.sink.find('message dead-lettered').length === 1, 10_000, 'dead-letter log line');
  await sub.close();
  return { topic, id: res.body.id as string, line: r.sink.find('message dead-lettered')[0] };
}

describe('logs without an OpenTelemetry SDK', () => {
  let r: Running;
  beforeAll(async () => {
    r = await start();
  });
  afterAll(() => stop(r));

  it("logs a dead letter with the message's ids and the trace of its traceparent", async () => {
    const { topic, id, line } = await deadLetterOne(r, {}, { data: { n: 1 }, traceparent: TRACEPARENT });
    expect(line).toMatchObject({
      level: 50,
      msg: 'message dead-lettered',
      traceId: TRACE_ID,
      spanId: PARENT_SPAN_ID,
      messageId: id,
      topic,
      group: 'accounting',
      attempt: 1,
      reason: 'unrecoverable',
      err: { type: 'UnrecoverableError', message: 'invoice has no customer', code: 'UNRECOVERABLE' },
    });
  });

  it("logs the bus's own records as JSON lines through pinoBusLogger", async () => {
    const topic = uniqueTopic('garbled');
    const sub = await r.bus.subscribe(topic, () => {}, { group: 'readers' });
    await r.bus.transport.publish([
      { id: 'not-an-envelope-1', topic, body: Buffer.from('{not json'), headers: {}, priority: 4 },
    ]);
    await until(() => r.sink.find('undecodable message dead-lettered').length === 1, 10_000, 'bus log line');
    expect(r.sink.find('undecodable message dead-lettered')[0]).toMatchObject({
      level: 40,
      component: 'bus',
      messageId: 'not-an-envelope-1',
      topic,
      group: 'readers',
      err: { message: expect.any(String) },
    });
    await sub.close();
  });

  it('logs each /v1 request once answered, 4xx at info', async () => {
    const res = await post(`${r.url}/v1/topics/bad..topic/messages`, { data: 1 });
    expect(res.status).toBe(400);
    await until(() => r.sink.find('request completed').some((l) => l.statusCode === 400), 10_000, 'request log');
    expect(r.sink.find('request completed').find((l) => l.statusCode === 400)).toMatchObject({
      level: 30,
      method: 'POST',
      route: '/v1/topics/:topic/messages',
      path: '/v1/topics/bad..topic/messages',
    });
  });
});

describe('logs with an OpenTelemetry SDK', () => {
  const exporter = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
  let r: Running;
  beforeAll(async () => {
    context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
    trace.setGlobalTracerProvider(provider);
    r = await start();
  });
  afterAll(async () => {
    await stop(r);
    await provider.shutdown();
    trace.disable();
    context.disable();
  });

  it('logs a dead letter with the ids of the consumer span, in the trace of the HTTP request', async () => {
    const { id, line } = await deadLetterOne(r, { traceparent: TRACEPARENT }, { data: { n: 2 } });
    await until(() => exporter.getFinishedSpans().some((s) => s.name.endsWith(' process')), 10_000, 'span');
    const consumer = exporter.getFinishedSpans().find((s) => s.name.endsWith(' process'));
    expect(line).toMatchObject({
      traceId: TRACE_ID,
      spanId: consumer?.spanContext().spanId,
      messageId: id,
      reason: 'unrecoverable',
    });
    expect(consumer?.attributes).toMatchObject({
      'messaging.agentbus.settlement': 'dead-letter',
      'messaging.agentbus.dead_letter_reason': 'unrecoverable',
      'error.type': 'UNRECOVERABLE',
    });
  });

  it('adds the active span to bus records (pinoBusLogger) and to any record (traceMixin)', () => {
    const sink = new LineSink();
    const log = pino({ mixin: traceMixin }, sink);
    const busLog = pinoBusLogger(pino(sink));
    const tracer = trace.getTracer('test');
    const spanId = tracer.startActiveSpan('work', (span) => {
      log.info({ a: 1 }, 'from pino');
      busLog.warn({ b: 2 }, 'from the bus');
      span.end();
      return span.spanContext().spanId;
    });
    busLog.warn({ c: 3 }, 'outside');
    const [fromPino, fromBus, outside] = sink.lines;
    expect(fromPino).toMatchObject({ msg: 'from pino', a: 1, spanId });
    expect(fromBus).toMatchObject({ msg: 'from the bus', b: 2, spanId, level: 40 });
    expect(fromBus.traceId).toBe(fromPino.traceId);
    expect(outside.traceId).toBeUndefined();
  });
});
