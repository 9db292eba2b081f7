import { ProxyTracerProvider, type Tracer, trace } from '@opentelemetry/api';

/** A tracer and a cheap check of whether it can record anything at all. */
export interface TracerProbe {
  readonly tracer: Tracer;
  /**
   * False while the tracer is the global API's and no SDK has registered a tracer provider: its
   * spans would all be no-ops, so instrumentation may skip its work (parsing, attributes,
   * context). Once a provider is seen it stays true, as the API's own proxy tracer keeps the
   * delegate it found.
   */
  enabled(): boolean;
}

/** `tracer` as given (always enabled), or the global tracer `name`, enabled once an SDK registers a provider. */
export function tracerProbe(name: string, tracer?: Tracer): TracerProbe {
  if (tracer !== undefined) return { tracer, enabled: () => true };
  const global = trace.getTracer(name);
  let found = false;
  return {
    tracer: global,
    enabled() {
      if (found) return true;
      const provider = trace.getTracerProvider();
      found = !(provider instanceof ProxyTracerProvider) || provider.getDelegateTracer(name) !== undefined;
      return found;
    },
  };
}
