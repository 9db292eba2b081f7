import { createBus, type Middleware, signer, verification, verifier } from '@agentbus/core';
import type { Command } from 'commander';
import { gatewayAuthOf, redactedConfig } from '../config/gateway-auth-config.js';
import { type ConfigFlags, loadConfig } from '../config/load-config.js';
import type { CliContext } from '../context.js';
import { aborted } from '../lifecycle.js';
import { openTransport } from '../open-transport.js';
import type { Output } from '../output.js';
import { reportRefusals } from '../security/command-security.js';
import { keyringSourceOf, loadKeyring } from '../security/keyring-source.js';
import { loadVerifyConfig } from '../security/verify-config.js';
import { spanExportOf, startSpanExport } from './serve-tracing.js';

interface ServeFlags {
  readonly config?: string;
  readonly host?: string;
  readonly port?: string;
  readonly logLevel?: string;
  readonly printConfig?: boolean;
}

/** The line `agentbus serve` prints on stdout once the gateway listens (tests and scripts parse it). */
export function listeningLine(url: string, dashboard: boolean): string {
  return `agentbus gateway listening on ${url}${dashboard ? ` — dashboard: ${url}/` : ''}`;
}

/**
 * The bus middleware of the gateway from `--keyring` and `--verify-config` (or their variables):
 * inbound, refusals reported on stderr, then the signature verifier, then the verification rules;
 * outbound, the rules, then the signer (only when the keyring has an active key), so that it
 * signs what is actually sent. A refused message is dead-lettered, never handed to a client.
 */
async function serveMiddleware(command: Command, out: Output): Promise<Middleware[]> {
  const source = keyringSourceOf(command);
  const keyring = source === undefined ? undefined : await loadKeyring(source, out);
  const path = command.optsWithGlobals<{ verifyConfig?: string }>().verifyConfig;
  const verifyConfig = path === undefined || path === '' ? undefined : loadVerifyConfig(path);
  const middleware: Middleware[] = [];
  if (keyring || verifyConfig) middleware.push(reportRefusals(out));
  if (keyring) middleware.push(verifier({ keyring }));
  if (verifyConfig) middleware.push(verification(verifyConfig.pipeline));
  if (keyring?.active !== undefined) middleware.push(signer({ keyring }));
  return middleware;
}

/** The serve flags that set configuration; `--transport` only when typed (its env and default are layers). */
function configFlagsOf(flags: ServeFlags, command: Command): ConfigFlags {
  const transport =
    command.getOptionValueSourceWithGlobals('transport') === 'cli'
      ? command.optsWithGlobals<{ transport: string }>().transport
      : undefined;
  return {
    ...(flags.config === undefined ? {} : { config: flags.config }),
    ...(transport === undefined ? {} : { transport }),
    ...(flags.host === undefined ? {} : { host: flags.host }),
    ...(flags.port === undefined ? {} : { port: flags.port }),
    ...(flags.logLevel === undefined ? {} : { logLevel: flags.logLevel }),
  };
}

const SERVE_HELP = `
Configuration (docs/configuration.md): defaults, then the YAML file (--config, else
$AGENTBUS_CONFIG, else ./agentbus.yaml if present), then AGENTBUS_* variables, then flags.
Logs are JSON lines on stderr; stdout gets the one "listening on" line.
Spans: exported over OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT (or _TRACES_ENDPOINT) is set or
OTEL_TRACES_EXPORTER=otlp (OTEL_SERVICE_NAME, default agentbus-gateway; OTEL_SDK_DISABLED=true
or OTEL_TRACES_EXPORTER=none turn it off); a provider registered by --import takes precedence.
On SIGINT/SIGTERM the gateway stops accepting, drains in-flight requests (drainTimeoutMs),
closes the bus and the transport and exits 130/143; a second signal kills at once.
Exit codes: 2 bad configuration or flags; 1 the transport or the port failed.`;

/** `agentbus serve`: the gateway (HTTP API, WebSocket, dashboard) over one bus until a signal. */
export function registerServeCommand(program: Command, ctx: CliContext): void {
  program
    .command('serve')
    .description('run the gateway: HTTP API, WebSocket protocol, health, metrics and dashboard over the transport')
    .option('--config <file>', 'YAML configuration file (default: $AGENTBUS_CONFIG, else ./agentbus.yaml if present)')
    .option('--host <host>', 'interface to listen on (default 127.0.0.1)')
    .option('--port <port>', 'TCP port, 0 for any free one (default 8080)')
    .option('--log-level <level>', 'trace, debug, info, warn, error, fatal or silent (default info)')
    .option('--print-config', 'print the merged configuration as JSON (secrets redacted) and exit')
    .addHelpText('after', SERVE_HELP)
    .action(async (flags: ServeFlags, command: Command) => {
      // Everything is read and checked before anything is opened.
      const { config, file } = loadConfig({ flags: configFlagsOf(flags, command) });
      if (flags.printConfig) {
        ctx.out.line(JSON.stringify(redactedConfig(config), null, 2));
        return;
      }
      const auth = await gatewayAuthOf(config, flags.config ?? file?.path ?? 'configuration', ctx.out);
      const spanExport = spanExportOf(process.env);
      // Loaded here, not at the top: every other command starts without fastify, pino and OpenTelemetry.
      const [{ createGateway, pinoBusLogger, traceMixin, tracing }, { pino }] = await Promise.all([
        import('@agentbus/gateway'),
        import('pino'),
      ]);
      // Every log line made inside a span carries its traceId and spanId.
      const logger = pino(
        { level: config.logLevel, base: { service: 'agentbus-gateway' }, mixin: traceMixin },
        pino.destination(2),
      );

      // Deferred first, so it runs last: the spans of the shutdown itself are flushed too.
      const stopSpanExport = await startSpanExport(spanExport, (m) => logger.warn(m));
      if (stopSpanExport && spanExport.kind === 'otlp') {
        ctx.lifecycle.defer(stopSpanExport);
        logger.info({ serviceName: spanExport.serviceName }, 'exporting spans over OTLP');
      }
      // Tracing first: it stamps the envelope's traceparent before the signer signs it.
      const middleware = [tracing(), ...(await serveMiddleware(command, ctx.out))];

      const transport = openTransport(config.transport, {
        ...(config.redis.keyPrefix === undefined ? {} : { redis: { keyPrefix: config.redis.keyPrefix } }),
      });
      ctx.lifecycle.defer(() => transport.close());
      await transport.connect();
      const bus = createBus({
        transport,
        source: 'agentbus-gateway',
        middleware,
        logger: pinoBusLogger(logger.child({ component: 'bus' })),
      });
      // Closed after the gateway (newest first): in-flight requests drain, then handlers, then the transport.
      ctx.lifecycle.defer(() => bus.close());
      const gateway = await createGateway({
        bus,
        ...(auth ? { auth } : {}),
        logger,
        maxBodyBytes: config.maxBodyBytes,
        maxRequestTimeoutMs: config.maxRequestTimeoutMs,
        drainTimeoutMs: config.drainTimeoutMs,
        groups: config.groups,
        dashboard: config.dashboard,
        ws: config.ws,
        ownsBus: false,
      });
      ctx.lifecycle.defer(async () => {
        logger.info('shutting down: draining in-flight requests');
        await gateway.close();
        logger.info('gateway closed');
      });
      const url = await gateway.listen({ host: config.host, port: config.port });
      ctx.out.line(listeningLine(url, config.dashboard));
      await aborted(ctx.lifecycle.signal);
    });
}
