import { ConfigError } from '@agentbus/core';

/** What `serve` does with spans, read from the standard OpenTelemetry variables. */
export type SpanExport =
  | { readonly kind: 'none' }
  | { readonly kind: 'otlp'; readonly protocol: OtlpProtocol; readonly serviceName: string };

/** The OTLP encodings over HTTP that serve bundles an exporter for (no gRPC). */
export type OtlpProtocol = 'http/protobuf' | 'http/json';

/**
 * The span export the OpenTelemetry environment asks for:
 * - `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`: none;
 * - `OTEL_TRACES_EXPORTER=otlp`, or unset with `OTEL_EXPORTER_OTLP_ENDPOINT` or
 *   `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` set: OTLP over HTTP to that endpoint, protobuf (the
 *   spec's default) or JSON as `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, else
 *   `OTEL_EXPORTER_OTLP_PROTOCOL`, says — the exporter reads the endpoint, headers and timeout
 *   variables itself; empty or blank variables count as unset, as the spec says;
 * - unset without an endpoint: none (nothing is exported unless asked).
 * Any other exporter name, an endpoint that is no http(s) URL, or `grpc` (or another protocol)
 * is a ConfigError naming the variable.
 */
export function spanExportOf(environment: NodeJS.ProcessEnv): SpanExport {
  const env = (key: string): string | undefined => environment[key]?.trim() || undefined;
  if (env('OTEL_SDK_DISABLED')?.toLowerCase() === 'true') return { kind: 'none' };
  const names = (env('OTEL_TRACES_EXPORTER') ?? '')
    .split(',')
    .map((s) => s.trim().toLowerCase())
    .filter((s) => s !== '');
  const endpointVar = ['OTEL_EXPORTER_OTLP_TRACES_ENDPOINT', 'OTEL_EXPORTER_OTLP_ENDPOINT'].find((k) => env(k));
  const serviceName = env('OTEL_SERVICE_NAME') ?? 'agentbus-gateway';
  // One exporter, OTLP: stdout is the "listening on" line's, so no console exporter.
  if (names.length > 1 || (names.length === 1 && names[0] !== 'otlp' && names[0] !== 'none'))
    throw new ConfigError('must be otlp or none', { path: 'OTEL_TRACES_EXPORTER' });
  if (names[0] === 'none' || (names.length === 0 && endpointVar === undefined)) return { kind: 'none' };
  // What the bundled exporter cannot do is refused, rather than exporting nowhere in silence.
  if (endpointVar !== undefined) {
    const value = env(endpointVar) as string;
    let url: URL | undefined;
    try {
      url = new URL(value);
    } catch {
      url = undefined;
    }
    if (url === undefined || (url.protocol !== 'http:' && url.protocol !== 'https:'))
      throw new ConfigError(`must be an http:// or https:// URL, got ${JSON.stringify(value)}`, { path: endpointVar });
  }
  // The signal's own variable wins over the general one.
  const protocolVar = ['OTEL_EXPORTER_OTLP_TRACES_PROTOCOL', 'OTEL_EXPORTER_OTLP_PROTOCOL'].find((k) => env(k));
  const protocol = protocolVar === undefined ? 'http/protobuf' : (env(protocolVar) as string);
  if (protocol !== 'http/protobuf' && protocol !== 'http/json')
    throw new ConfigError(
      `must be http/protobuf or http/json (serve bundles no gRPC exporter), got ${JSON.stringify(protocol)}`,
      {
        path: protocolVar as string,
      },
    );
  return { kind: 'otlp', protocol, serviceName };
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
  const { OTLPTraceExporter } =
    exportOf.protocol === 'http/json'
      ? await import('@opentelemetry/exporter-trace-otlp-http')
      : await import('@opentelemetry/exporter-trace-otlp-proto');
  const provider = new sdk.BasicTracerProvider({
    resource: resources.resourceFromAttributes({ 'service.name': exportOf.serviceName }),
    spanProcessors: [new sdk.BatchSpanProcessor(new OTLPTraceExporter())],
  });
  if (!api.trace.setGlobalTracerProvider(provider)) {
    await provider.shutdown();
    warn('a tracer provider is already registered in this process: spans go to it, not to OTEL_* settings');
    return undefined;
  }
  // Export failures (collector down, refused) reach the log instead of vanishing.
  const toLog = (message: string, ...args: unknown[]) =>
    warn(
      `opentelemetry: ${[message, ...args.map((a) => (typeof a === 'string' ? a : a instanceof Error ? a.message : JSON.stringify(a)))].join(' ')}`,
    );
  api.diag.setLogger(
    { error: toLog, warn: toLog, info: () => {}, debug: () => {}, verbose: () => {} },
    api.DiagLogLevel.WARN,
  );
  api.context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  api.propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  return () => provider.shutdown();
}
