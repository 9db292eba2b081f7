import { ConfigError } from '@agentbus/core';
import { describe, expect, it } from 'vitest';
import { spanExportOf } from '../src/commands/serve-tracing.js';

describe('serve: which span export the OTEL_* variables ask for', () => {
  it('exports over OTLP only when asked: an endpoint, or OTEL_TRACES_EXPORTER=otlp', () => {
    expect(spanExportOf({})).toEqual({ kind: 'none' });
    expect(spanExportOf({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' })).toEqual({
      kind: 'otlp',
      protocol: 'http/protobuf',
      serviceName: 'agentbus-gateway',
    });
    expect(
      spanExportOf({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'https://c/v1/traces', OTEL_SERVICE_NAME: ' gw-eu ' }),
    ).toEqual({ kind: 'otlp', protocol: 'http/protobuf', serviceName: 'gw-eu' });
    expect(spanExportOf({ OTEL_TRACES_EXPORTER: 'OTLP', OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json' })).toEqual({
      kind: 'otlp',
      protocol: 'http/json',
      serviceName: 'agentbus-gateway',
    });
    // Blank counts as unset; the signal's own protocol variable wins over the general one.
    expect(spanExportOf({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: ' ', OTEL_EXPORTER_OTLP_ENDPOINT: '' })).toEqual({
      kind: 'none',
    });
    expect(
      spanExportOf({
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://c:4318/v1/traces',
        OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc',
        OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'http/json',
      }),
    ).toMatchObject({ kind: 'otlp', protocol: 'http/json' });
  });

  it('exports nothing when turned off, whatever else is set', () => {
    const endpoint = { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' };
    expect(spanExportOf({ ...endpoint, OTEL_TRACES_EXPORTER: 'none' })).toEqual({ kind: 'none' });
    expect(spanExportOf({ ...endpoint, OTEL_SDK_DISABLED: 'TRUE' })).toEqual({ kind: 'none' });
  });

  it('refuses what the bundled exporter cannot do with a ConfigError naming the variable', () => {
    const cases: [NodeJS.ProcessEnv, string][] = [
      [{ OTEL_TRACES_EXPORTER: 'zipkin' }, 'OTEL_TRACES_EXPORTER'],
      [{ OTEL_TRACES_EXPORTER: 'otlp,console' }, 'OTEL_TRACES_EXPORTER'],
      [{ OTEL_EXPORTER_OTLP_ENDPOINT: 'collector:4318' }, 'OTEL_EXPORTER_OTLP_ENDPOINT'],
      [{ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'grpc://c:4317' }, 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT'],
      [{ OTEL_TRACES_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' }, 'OTEL_EXPORTER_OTLP_PROTOCOL'],
      [
        { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318', OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'grpc' },
        'OTEL_EXPORTER_OTLP_TRACES_PROTOCOL',
      ],
    ];
    for (const [env, path] of cases) {
      let err: unknown;
      try {
        spanExportOf(env);
      } catch (e) {
        err = e;
      }
      expect(err, JSON.stringify(env)).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).data, JSON.stringify(env)).toMatchObject({ path });
    }
    expect(spanExportOf({ OTEL_TRACES_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_PROTOCOL: 'http/protobuf' })).toMatchObject({
      protocol: 'http/protobuf',
    });
  });
});
