import { BusError, ConnectionError, type HealthStatus, TimeoutError, type Transport } from '@agentbus/core';
import type { HealthDocument } from '@agentbus/gateway';
import type { Command } from 'commander';
import { duration } from '../arguments.js';
import { UsageError } from '../cli-error.js';
import type { CliContext } from '../context.js';
import { openTransport } from '../open-transport.js';
import { renderTable, type Style } from '../output.js';

/** Defaults of `agentbus health`. */
export const HEALTH_DEFAULTS = Object.freeze({
  url: 'http://127.0.0.1:8080',
  /** The gateway's deep check gives each component 5 s; leave room for the round trip. */
  timeoutMs: 10_000,
});

/** The environment variable holding the gateway URL when `--url` is absent. */
export const GATEWAY_URL_ENV = 'AGENTBUS_GATEWAY_URL';

/** A health check came out `fail`: exit code 1, after the checks were printed. */
export class UnhealthyError extends BusError {
  override readonly code = 'UNHEALTHY';
}

interface HealthFlags {
  readonly url?: string;
  readonly deep?: boolean;
  readonly json?: boolean;
  readonly timeout?: number;
}

/** What one health command found, in the shape of the gateway's health document. */
export type HealthResult = HealthDocument & { readonly target: string };

function colour(status: HealthStatus, style: Style): string {
  return status === 'pass' ? style.green(status) : status === 'warn' ? style.yellow(status) : style.red(status);
}

/** The human form: a status line, then one row per check. */
export function healthLines(result: HealthResult, style: Style): string[] {
  const head = `${style.bold(colour(result.status, style))}  ${result.description} (${result.serviceId}) at ${result.target}`;
  const rows = Object.entries(result.checks ?? {}).flatMap(([name, list]) =>
    list.map((c) => [
      name,
      c.componentId ?? '',
      colour(c.status, style),
      c.observedValue === undefined ? '' : `${c.observedValue}${c.observedUnit ? ` ${c.observedUnit}` : ''}`,
      c.output ?? '',
    ]),
  );
  if (rows.length === 0) return [head];
  return [head, '', ...renderTable(['CHECK', 'COMPONENT', 'STATUS', 'OBSERVED', 'OUTPUT'], rows)];
}

/** Asks a running gateway: `GET /health` (`?deep=1` when deep). */
export async function gatewayHealth(url: string, deep: boolean, timeoutMs: number): Promise<HealthResult> {
  let base: URL;
  try {
    base = new URL(url);
  } catch {
    throw new UsageError(`--url: '${url}' is not a URL; e.g. ${HEALTH_DEFAULTS.url}`);
  }
  // Relative to the base path, so a gateway behind a proxy prefix (`https://h/agentbus/`) works.
  if (!base.pathname.endsWith('/')) base.pathname += '/';
  const target = new URL(deep ? 'health?deep=1' : 'health', base);
  const shownBase = base.href.replace(/\/$/, '');
  let res: Response;
  try {
    res = await fetch(target, {
      signal: AbortSignal.timeout(timeoutMs),
      headers: { accept: 'application/health+json' },
    });
  } catch (err) {
    const inner = (err as { cause?: { code?: string; message?: string } }).cause;
    const cause = inner?.code ?? inner?.message ?? (err as Error).message;
    if ((err as Error).name === 'TimeoutError')
      throw new TimeoutError(`gateway at ${shownBase} did not answer within ${timeoutMs} ms`);
    throw new ConnectionError(`gateway at ${shownBase} is unreachable (${cause})`, { cause: err });
  }
  const text = await res.text();
  let doc: HealthDocument;
  try {
    doc = JSON.parse(text) as HealthDocument;
  } catch {
    doc = { status: 'fail', description: '', serviceId: '' };
  }
  if (typeof doc?.status !== 'string' || !['pass', 'warn', 'fail'].includes(doc.status))
    throw new ConnectionError(
      `${target.href} answered ${res.status} without a health document; is it an agentbus gateway?`,
    );
  return { ...doc, target: shownBase };
}

/** Checks a transport directly (`transport.health(deep)`), without a gateway. */
export async function transportHealth(url: string, deep: boolean, timeoutMs: number): Promise<HealthResult> {
  const transport: Transport = openTransport(url);
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new TimeoutError(`${url} did not answer within ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    const report = await Promise.race([transport.connect().then(() => transport.health(deep)), deadline]);
    const time = new Date().toISOString();
    return {
      status: report.status,
      description: 'agentbus transport',
      serviceId: report.transport,
      target: url,
      checks: {
        [deep ? 'transport:roundtrip' : 'transport:connected']: [
          {
            componentId: report.transport,
            componentType: 'datastore',
            status: report.status,
            ...(report.latencyMs === undefined
              ? {}
              : { observedValue: Math.round(report.latencyMs * 100) / 100, observedUnit: 'ms' }),
            time,
            ...(report.error ? { output: report.error } : {}),
          },
        ],
      },
    };
  } finally {
    clearTimeout(timer);
    await Promise.race([transport.close().catch(() => undefined), new Promise((r) => setTimeout(r, 2_000).unref())]);
  }
}

/**
 * `agentbus health`: asks a running gateway (`--url`, else `$AGENTBUS_GATEWAY_URL`, else
 * http://127.0.0.1:8080), or, with `--transport` typed and no URL, the transport itself. Deep
 * by default (a backend round trip); `--no-deep` for the surface check. Exit 0 on pass or warn,
 * 1 on fail, unreachable or timeout.
 */
export function registerHealthCommand(program: Command, ctx: CliContext): void {
  program
    .command('health')
    .description(
      "check a running gateway's /health (deep by default), or with --transport and no --url the transport itself",
    )
    .option('--url <url>', `gateway base URL (default: $${GATEWAY_URL_ENV}, else ${HEALTH_DEFAULTS.url})`)
    .option('--deep', 'round trip through the backend (the default)')
    .option('--no-deep', 'surface check only: the process answers and the bus is open')
    .option('--timeout <duration>', 'give up after this long (default 10s)', duration)
    .option('--json', 'print the health document as JSON')
    .addHelpText('after', '\nExit codes: 0 pass or warn; 1 fail, unreachable or timed out; 2 bad usage.')
    .action(async (flags: HealthFlags, command: Command) => {
      const deep = flags.deep !== false;
      const timeoutMs = flags.timeout ?? HEALTH_DEFAULTS.timeoutMs;
      const typedTransport = command.getOptionValueSourceWithGlobals('transport') === 'cli';
      const url = flags.url ?? (process.env[GATEWAY_URL_ENV] || undefined);
      let result: HealthResult;
      try {
        result =
          url === undefined && typedTransport
            ? await transportHealth(command.optsWithGlobals<{ transport: string }>().transport, deep, timeoutMs)
            : await gatewayHealth(url ?? HEALTH_DEFAULTS.url, deep, timeoutMs);
      } catch (err) {
        if (flags.json && err instanceof BusError && err.code !== 'USAGE' && err.code !== 'CONFIG')
          ctx.out.line(JSON.stringify({ status: 'fail', output: err.message }));
        throw err;
      }
      if (flags.json) ctx.out.line(JSON.stringify(result));
      else for (const line of healthLines(result, ctx.out.style)) ctx.out.line(line);
      if (result.status === 'fail') throw new UnhealthyError(`${result.target} is failing its health check`);
    });
}
