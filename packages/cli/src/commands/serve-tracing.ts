import { ConfigError } from '@agentbus/core';

/** What `serve` does with spans, read from the standard OpenTelemetry variables. */
export type SpanExport = { readonly kind: 'none' } | { readonly kind: 'otlp'; readonly serviceName: string };

/**
 * The span export the OpenTelemetry environment asks for:
 * - `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`: none;
 * - `OTEL_TRACES_EXPORTER=otlp`, or unset with `OTEL_EXPORTER_OTLP_ENDPOINT` or
 *   `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` set: OTLP over HTTP (JSON), to that endpoint — the
 *   exporter reads the endpoint, headers and timeout variables itself;
 * - unset without an endpoint: none (nothing is exported unless asked).
 * Any other exporter name is a ConfigError naming the variable.
 */
export function spanExportOf(env: NodeJS.ProcessEnv): SpanExport {
  if (env.OTEL_SDK_DISABLED?.trim().toLowerCase() === 'true') return { kind: 'none' };
  const names = (env.OTEL_TRACES_EXPORTER ?? '')
    .split(',')
    .map((s) => s.trim().toLowerCase())
    .filter((s) => s !== '');
  const endpoint = env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT || env.OTEL_EXPORTER_OTLP_ENDPOINT;
  const serviceName = env.OTEL_SERVICE_NAME?.trim() || 'agentbus-gateway';
  if (names.length === 0) return endpoint ? { kind: 'otlp', serviceName } : { kind: 'none' };
  // One exporter, OTLP: stdout is the "listening on" line's, so no console exporter.
  if (names.length > 1 || (names[0] !== 'otlp' && names[0] !== 'none'))
    throw new ConfigError('must be otlp or none', { path: 'OTEL_TRACES_EXPORTER' });
  return names[0] === 'none' ? { kind: 'none' } : { kind: 'otlp', serviceName };
}

/**
 * Registers a tracer provider that exports the gateway's spans as `exportOf` says, with the
 * AsyncLocalStorage context manager and the W3C trace-context propagator. Resolves with a
 * shutdown that flushes what is left, or with undefined when nothing is to be exported or the
 * process already registered a provider of its own (e.g. `node --import ./otel-setup.mjs`): that
 * one is used then. The SDK is loaded only here.
 */
export async function startSpanExport(
  exportOf: SpanExport,
  warn: (message: string) => void,
): Promise<(() => Promise<void>) | undefined> {
  if (exportOf.kind === 'none') return undefined;
  const [api, { AsyncLocalStorageContextManager }, { W3CTraceContextPropagator }, resources, sdk] = await Promise.all([
    import('@opentelemetry/api'),
    import('@opentelemetry/context-async-hooks'),
    import('@opentelemetry/core'),
    import('@opentelemetry/resources'),
    import('@opentelemetry/sdk-trace-base'),
  ]);
  const { OTLPTraceExporter } = await import('@opentelemetry/exporter-trace-otlp-http');
  const provider = new sdk.BasicTracerProvider({
    resource: resources.resourceFromAttributes({ 'service.name': exportOf.serviceName }),
    spanProcessors: [new sdk.BatchSpanProcessor(new OTLPTraceExporter())],
  });
  if (!api.trace.setGlobalTracerProvider(provider)) {
    await provider.shutdown();
    warn('a tracer provider is already registered in this process: spans go to it, not to OTEL_* settings');
    return undefined;
  }
  api.context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  api.propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  return () => provider.shutdown();
}
