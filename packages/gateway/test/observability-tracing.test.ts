import { randomBytes } from 'node:crypto';
import { until } from '@agentbus/conformance';
import { createBus, type Envelope, Keyring, memoryTransport, signing } from '@agentbus/core';
import { formatTraceparent, parseTraceparent, tracing } from '@agentbus/gateway';
import { SpanKind, TraceFlags } from '@opentelemetry/api';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { describe, expect, it } from 'vitest';
import { uniqueTopic } from './gateway-fixtures.js';

const VALID = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';

describe('traceparent', () => {
  it('parses a W3C traceparent into a remote span context and formats it back', () => {
    const sc = parseTraceparent(VALID);
    expect(sc).toEqual({
      traceId: '0af7651916cd43dd8448eb211c80319c',
      spanId: 'b7ad6b7169203331',
      traceFlags: TraceFlags.SAMPLED,
      isRemote: true,
    });
    expect(formatTraceparent(sc!)).toBe(VALID);
    expect(formatTraceparent({ ...sc!, traceFlags: TraceFlags.NONE })).toBe(VALID.replace(/01$/, '00'));
  });

  it('refuses malformed, all-zero, version ff and version 00 with extra fields; accepts future versions', () => {
    for (const bad of [
      undefined,
      '',
      'garbage',
      VALID.toUpperCase(),
      VALID.replace('0af7651916cd43dd8448eb211c80319c', '0'.repeat(32)),
      VALID.replace('b7ad6b7169203331', '0'.repeat(16)),
      `ff${VALID.slice(2)}`,
      `${VALID}-extra`,
      VALID.slice(0, -1),
    ])
      expect(parseTraceparent(bad), String(bad)).toBeUndefined();
    expect(parseTraceparent(`01${VALID.slice(2)}-future-field`)?.spanId).toBe('b7ad6b7169203331');
  });
});

describe('tracing middleware', () => {
  it('leaves envelopes alone while no SDK is registered', async () => {
    const bus = createBus({ transport: memoryTransport(), middleware: [tracing()] });
    const topic = uniqueTopic('plain');
    const got: Envelope[] = [];
    const sub = await bus.subscribe(topic, (d) => {
      got.push(d.envelope);
    });
    const plain = await bus.publish(topic, 1);
    const carried = await bus.publish(topic, 2, { traceparent: VALID });
    await until(() => got.length === 2, 10_000, 'two deliveries');
    expect(plain.traceparent).toBeUndefined();
    expect(carried.traceparent).toBe(VALID);
    expect(got.map((e) => e.traceparent)).toEqual([undefined, VALID]);
    await sub.close();
    await bus.close();
  });

  it('uses a given tracer without a global provider, and a second tracing middleware adds no spans', async () => {
    const exporter = new InMemorySpanExporter();
    const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
    const tracer = provider.getTracer('test');
    const bus = createBus({
      transport: memoryTransport(),
      middleware: [tracing({ tracer, transport: 'memory' }), tracing({ tracer })],
    });
    const topic = uniqueTopic('given');
    const got: Envelope[] = [];
    const sub = await bus.subscribe(topic, (d) => {
      got.push(d.envelope);
    });
    const sent = await bus.publish(topic, 1);
    await until(() => exporter.getFinishedSpans().length === 2, 10_000, 'two spans');
    const [producer, consumer] = [SpanKind.PRODUCER, SpanKind.CONSUMER].map((k) =>
      exporter.getFinishedSpans().find((s) => s.kind === k),
    );
    expect(sent.traceparent).toBe(formatTraceparent(producer!.spanContext()));
    expect(got[0]?.traceparent).toBe(sent.traceparent);
    expect(consumer?.parentSpanContext?.spanId).toBe(producer?.spanContext().spanId);
    expect(consumer?.spanContext().traceId).toBe(producer?.spanContext().traceId);
    await sub.close();
    await bus.close();
    await provider.shutdown();
  });

  it('does not change an envelope signed before it, so that it still verifies', async () => {
    const exporter = new InMemorySpanExporter();
    const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
    const keyring = new Keyring({
      keys: [{ kid: 'k1', algorithm: 'hmac-sha256', secret: randomBytes(32) }],
      active: 'k1',
    });
    // Signing first, tracing after it: the wrong order, which must still not break verification.
    const bus = createBus({
      transport: memoryTransport(),
      middleware: [signing({ keyring }), tracing({ tracer: provider.getTracer('test') })],
    });
    const topic = uniqueTopic('signed');
    const got: Envelope[] = [];
    const sub = await bus.subscribe(topic, (d) => {
      got.push(d.envelope);
    });
    const sent = await bus.publish(topic, { amount: 10 }, { traceparent: VALID });
    await until(() => got.length === 1, 10_000, 'a verified delivery');
    expect(sent.traceparent).toBe(VALID);
    expect(got[0]?.data).toEqual({ amount: 10 });
    const producer = exporter.getFinishedSpans().find((s) => s.kind === SpanKind.PRODUCER);
    expect(producer?.parentSpanContext?.spanId).toBe('b7ad6b7169203331');
    await sub.close();
    await bus.close();
    await provider.shutdown();
  });
});
