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
 * Any other exporter name, an endpoint that is no http(s) URL, or an OTLP protocol other than
 * `http/json` is a ConfigError naming the variable.
 */
export function spanExportOf(env: NodeJS.ProcessEnv): SpanExport {
  if (env.OTEL_SDK_DISABLED?.trim().toLowerCase() === 'true') return { kind: 'none' };
  const names = (env.OTEL_TRACES_EXPORTER ?? '')
    .split(',')
    .map((s) => s.trim().toLowerCase())
    .filter((s) => s !== '');
  const endpointVar = env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
    ? 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT'
    : env.OTEL_EXPORTER_OTLP_ENDPOINT
      ? 'OTEL_EXPORTER_OTLP_ENDPOINT'
      : undefined;
  const serviceName = env.OTEL_SERVICE_NAME?.trim() || 'agentbus-gateway';
  // One exporter, OTLP: stdout is the "listening on" line's, so no console exporter.
  if (names.length > 1 || (names.length === 1 && names[0] !== 'otlp' && names[0] !== 'none'))
    throw new ConfigError('must be otlp or none', { path: 'OTEL_TRACES_EXPORTER' });
  if (names[0] === 'none' || (names.length === 0 && endpointVar === undefined)) return { kind: 'none' };
  // What the bundled exporter cannot do is refused, rather than exporting nowhere in silence.
  if (endpointVar !== undefined) {
    const value = env[endpointVar] as string;
    let url: URL | undefined;
    try {
      url = new URL(value);
    } catch {
      url = undefined;
    }
    if (url === undefined || (url.protocol !== 'http:' && url.protocol !== 'https:'))
      throw new ConfigError(`must be an http:// or https:// URL, got ${JSON.stringify(value)}`, { path: endpointVar });
  }
  for (const key of ['OTEL_EXPORTER_OTLP_TRACES_PROTOCOL', 'OTEL_EXPORTER_OTLP_PROTOCOL'] as const) {
    const protocol = env[key]?.trim();
    if (protocol && protocol !== 'http/json')
      throw new ConfigError(`must be http/json (the exporter bundled with serve), got ${JSON.stringify(protocol)}`, {
        path: key,
      });
  }
  return { kind: 'otlp', serviceName };
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
  // Export failures (collector down, refused) reach the log instead of vanishing.
  api.diag.setLogger(
    {
      error: (message: string) => warn(`opentelemetry: ${message}`),
      warn: (message: string) => warn(`opentelemetry: ${message}`),
      info: () => {},
      debug: () => {},
      verbose: () => {},
    },
    api.DiagLogLevel.WARN,
  );
  if (!api.trace.setGlobalTracerProvider(provider)) {
    await provider.shutdown();
    warn('a tracer provider is already registered in this process: spans go to it, not to OTEL_* settings');
    return undefined;
  }
  api.context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  api.propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  return () => provider.shutdown();
}
