import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Command, InvalidArgumentError } from 'commander';
import { positiveInt, positiveNumber } from '../arguments.js';
import { type CliContext, transportUrlOf } from '../context.js';
import { benchSchemeOf } from '../open-transport.js';
import { baseProgram, transportOption } from '../program-base.js';
import { type Progress, progressWanted, startProgress } from '../progress.js';
import { runCli } from '../run-cli.js';
import { type BenchMiddleware, parseBenchMiddleware } from './bench-middleware.js';
import { BENCH_DEFAULTS, type BenchQueueType } from './bench-options.js';
import { benchTable } from './bench-report.js';
import type { RequestReplyBenchResult } from './request-reply-bench.js';

interface BenchFlags {
  readonly messages: number;
  readonly size: number;
  readonly codec: string;
  readonly consumers: number;
  readonly concurrency: number;
  readonly prefetch?: number;
  readonly batch: number;
  readonly rate?: number;
  readonly queueType?: BenchQueueType;
  readonly warmup: number;
  readonly middleware?: BenchMiddleware[];
  readonly workflows: number;
  readonly rounds: number;
  readonly requestReply?: boolean;
  readonly json?: boolean;
}

/** `--middleware` for commander: a ConfigError becomes commander's invalid-argument error. */
function middlewareList(value: string): BenchMiddleware[] {
  try {
    return parseBenchMiddleware(value);
  } catch (err) {
    throw new InvalidArgumentError(`${(err as Error).message}.`);
  }
}

function addBenchOptions(command: Command): Command {
  return command
    .option('--messages <n>', 'messages per phase', positiveInt, BENCH_DEFAULTS.messages)
    .option('--size <bytes>', 'payload bytes per message', positiveInt, BENCH_DEFAULTS.size)
    .option('--codec <name>', 'bus codec: json or msgpack', BENCH_DEFAULTS.codec)
    .option('--consumers <n>', 'competing consumers in one group', positiveInt, BENCH_DEFAULTS.consumers)
    .option('--concurrency <n>', 'messages in flight per consumer', positiveInt, BENCH_DEFAULTS.concurrency)
    .option(
      '--prefetch <n>',
      'deliveries each agentbus consumer leases ahead (default: the raw baseline read batch: concurrency, 500 on Redis and RabbitMQ)',
      positiveInt,
    )
    .option('--batch <n>', 'messages per publish batch', positiveInt, BENCH_DEFAULTS.batchSize)
    .option(
      '--rate <msg/s>',
      `latency phase offered rate (default ${BENCH_DEFAULTS.rateFraction} x end-to-end)`,
      positiveNumber,
    )
    .option('--queue-type <type>', 'amqp:// only: RabbitMQ queue type of both sides, quorum (default) or classic')
    .option(
      '--warmup <n>',
      'unmeasured warm-up messages per system',
      (v) => (v === '0' ? 0 : positiveInt(v)),
      BENCH_DEFAULTS.warmupMessages,
    )
    .option(
      '--middleware <list>',
      'run agentbus with retry, dedup, sequencing (stack: all three; memory stores), sign-hmac or sign-ed25519, schema (security-hmac, security-ed25519: signing + schema), comma-separated, and also measure the bare bus on the same messages',
      middlewareList,
    )
    .option(
      '--workflows <n>',
      'with --middleware: workflows the messages are spread over (workflowid)',
      positiveInt,
      BENCH_DEFAULTS.workflows,
    )
    .option(
      '--rounds <n>',
      'with --middleware: end-to-end rounds of each bus, taking turns; the medians are compared',
      positiveInt,
      BENCH_DEFAULTS.rounds,
    )
    .option(
      '--request-reply',
      'measure request-reply round trips instead: --messages requests, --concurrency in flight, --size bytes',
    )
    .option('--json', 'print one JSON object as the last line of stdout');
}

async function benchAction(ctx: CliContext, transport: string, flags: BenchFlags): Promise<void> {
  if (flags.requestReply) {
    const r = await requestReplyAction(transport, flags);
    if (flags.json) ctx.out.line(JSON.stringify(r));
    else ctx.out.line((await import('./request-reply-bench.js')).formatRequestReplyReport(r));
    return;
  }
  const total = estimatedPhases(transport, flags);
  const progress = startProgress({
    enabled: progressWanted(flags.json),
    total,
    unit: 'phases',
    fallbackNote: (text) => ctx.out.note(text),
  });
  const phases = new PhaseProgress(progress, total);
  // Loaded on use: the raw clients and BullMQ are not needed to start any other command.
  const { runBench } = await import('./run-bench.js');
  const report = await runBench(
    {
      transport,
      messages: flags.messages,
      size: flags.size,
      codec: flags.codec,
      consumers: flags.consumers,
      concurrency: flags.concurrency,
      prefetch: flags.prefetch,
      batchSize: flags.batch,
      rate: flags.rate,
      queueType: flags.queueType,
      warmupMessages: flags.warmup,
      middleware: flags.middleware,
      workflows: flags.workflows,
      rounds: flags.rounds,
    },
    (text) => phases.log(text),
    ctx.lifecycle.signal,
  ).finally(() => phases.stop());
  if (flags.json) ctx.out.line(JSON.stringify(report));
  else for (const line of benchTable(report, ctx.out.style)) ctx.out.line(line);
}

/** A phase line of runBench's log (`agentbus: publish 10000 messages`), as opposed to a notice. */
const PHASE_LINE = /^[^:]+: (warm-up|publish|drain|end to end|latency)\b/;

/**
 * How many measured phases a run has: publish, drain, end to end and latency (and a warm-up) per
 * system; with --middleware the bare bus too and the extra end-to-end rounds of both; on Redis
 * three raw systems (ioredis, node-redis, BullMQ). Only sizes the bar; it grows if short.
 */
function estimatedPhases(transport: string, flags: BenchFlags): number {
  const perSystem = 4 + (flags.warmup > 0 ? 1 : 0);
  const middleware = (flags.middleware?.length ?? 0) > 0;
  const buses = middleware ? 2 * perSystem + 2 * (flags.rounds - 1) : perSystem;
  const redis = /^rediss?:/i.test(transport);
  return buses + (redis ? 3 : 1) * perSystem;
}

/** Bench phases on a progress bar: every log line is noted above it, a phase line also advances it. */
class PhaseProgress {
  #started = 0;
  constructor(
    private readonly progress: Progress,
    private total: number,
  ) {}

  log(text: string): void {
    this.progress.note(`bench: ${text}`);
    if (!PHASE_LINE.test(text)) return;
    // A phase line says what starts now: the previous phase is done.
    this.#started++;
    if (this.#started > this.total) {
      this.total = this.#started;
      this.progress.setTotal(this.total);
    }
    this.progress.advance(this.#started > 1 ? 1 : 0, text);
  }

  stop(): void {
    if (this.#started > 0) this.progress.advance(1);
    this.progress.stop();
  }
}

/** `--request-reply`: SQLite runs on a temporary file, like the other phases. */
async function requestReplyAction(transport: string, flags: BenchFlags): Promise<RequestReplyBenchResult> {
  const sqlite = benchSchemeOf(transport) === 'sqlite';
  const dir = sqlite ? mkdtempSync(join(tmpdir(), 'agentbus-bench-rr-')) : undefined;
  try {
    const { runRequestReplyBench } = await import('./request-reply-bench.js');
    return await runRequestReplyBench({
      transport: dir ? `sqlite:${join(dir, 'bus.db')}` : transport,
      requests: flags.messages,
      concurrency: flags.concurrency,
      size: flags.size,
    });
  } finally {
    if (dir) rmSync(dir, { recursive: true, force: true });
  }
}

const DESCRIPTION =
  'measure publish, end-to-end throughput and latency of agentbus on a transport, beside the raw client';

/** `agentbus bench`: the transport comes from the global `--transport`. */
export function registerBenchCommand(program: Command, ctx: CliContext): void {
  addBenchOptions(
    program
      .command('bench')
      .description(
        `${DESCRIPTION} (sqlite runs on temp files; redis:// also measures node-redis, ioredis and BullMQ; amqp:// raw amqplib; nats:// raw nats.js)`,
      ),
  ).action((flags: BenchFlags, command: Command) => benchAction(ctx, transportUrlOf(command), flags));
}

/** The standalone benchmark program behind `npm run bench`, same options as `agentbus bench`. */
export function createBenchProgram(ctx: CliContext): Command {
  const program = baseProgram('bench').description(DESCRIPTION).addOption(transportOption(BENCH_DEFAULTS.transport));
  return addBenchOptions(program).action((flags: BenchFlags & { transport: string }) =>
    benchAction(ctx, flags.transport, flags),
  );
}

/** Runs the standalone benchmark on `argv` and resolves with the exit code. */
export function runBenchCli(argv: readonly string[]): Promise<number> {
  return runCli(createBenchProgram, argv);
}
