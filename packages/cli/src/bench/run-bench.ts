import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AMQP_TRANSPORT_DEFAULTS, AmqpNames } from '@agentbus/amqp';
import { ConfigError, codecByName, createBus } from '@agentbus/core';
import { NatsNames } from '@agentbus/nats';
import { openTransport, parseTransportUrl } from '../open-transport.js';
import { AgentbusSubject } from './agentbus-subject.js';
import { BENCH_MESSAGE_TYPE, type BenchMiddleware, benchMiddlewareStack } from './bench-middleware.js';
import { type BenchOptions, resolveBenchOptions } from './bench-options.js';
import { type BareComparison, type BenchReport, benchReport, middlewareFields } from './bench-report.js';
import type { BenchChannel, BenchSubject } from './bench-subject.js';
import { endToEnd, measureSubject, phaseTimeoutMs, type SubjectResult } from './phases.js';
import { deleteAmqpEntities, RAW_AMQP_DEFAULTS, RawAmqpSubject, redactAmqpUrl } from './raw-amqp-subject.js';
import { RawMemorySubject } from './raw-memory-subject.js';
import { deleteNatsStreams, RAW_NATS_DEFAULTS, RawNatsSubject, redactNatsUrl } from './raw-nats-subject.js';
import { RAW_REDIS_DEFAULTS } from './raw-redis-subject.js';
import { RawSqliteSubject } from './raw-sqlite-subject.js';
import { deleteKeysMatching, redactRedisUrl } from './redis-clients.js';
import { measureRedisPeers } from './redis-peers.js';

type Backend =
  | { readonly kind: 'memory' }
  | { readonly kind: 'sqlite'; readonly inMemory: boolean; readonly ignoredPath?: string }
  | { readonly kind: 'redis'; readonly url: string; readonly shown: string }
  | { readonly kind: 'amqp'; readonly url: string; readonly shown: string }
  | { readonly kind: 'nats'; readonly url: string; readonly shown: string };

/** `sqlite:` alone is fine here: the benchmark picks its own files. */
function backendOf(url: string): Backend {
  if (url === 'sqlite:') return { kind: 'sqlite', inMemory: false };
  if (/^rediss?:/i.test(url)) return redisBackend(url);
  if (/^amqps?:/i.test(url)) return amqpBackend(url);
  if (/^nats:/i.test(url)) return natsBackend(url);
  const parsed = parseTransportUrl(url);
  if (parsed.scheme === 'memory') return { kind: 'memory' };
  if (parsed.scheme === 'sqlite') {
    return parsed.path === ':memory:'
      ? { kind: 'sqlite', inMemory: true }
      : { kind: 'sqlite', inMemory: false, ignoredPath: parsed.path };
  }
  throw new ConfigError(`the benchmark supports memory:, sqlite:, redis://, amqp:// and nats:// so far, not ${url}`, {
    path: 'transport',
  });
}

/** `redis://[user:password@]host[:port][/db]` or `rediss://…`; the password never reaches a report. */
function redisBackend(url: string): Backend {
  const usage = 'write redis://host:port[/db] or rediss://host:port[/db]';
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new ConfigError(`'${url}' is not a valid Redis URL; ${usage}`, { path: 'transport' });
  }
  const db = parsed.pathname.replace(/^\//, '');
  if (parsed.hostname === '' || !/^\d*$/.test(db) || parsed.search !== '' || parsed.hash !== '') {
    throw new ConfigError(`'${parsed.protocol}//${parsed.host}${parsed.pathname}' is not a Redis URL; ${usage}`, {
      path: 'transport',
    });
  }
  return { kind: 'redis', url, shown: redactRedisUrl(url) };
}

/** `amqp://[user:password@]host[:port][/vhost]` or `amqps://…`; the password never reaches a report. */
function amqpBackend(url: string): Backend {
  const usage = 'write amqp://user:pass@host:port[/vhost] or amqps://…';
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new ConfigError(`'${redactAmqpUrl(url)}' is not a valid AMQP URL; ${usage}`, { path: 'transport' });
  }
  if (parsed.hostname === '' || parsed.hash !== '') {
    throw new ConfigError(`'${redactAmqpUrl(url)}' is not an AMQP URL; ${usage}`, { path: 'transport' });
  }
  return { kind: 'amqp', url, shown: redactAmqpUrl(url) };
}

/** `nats://[user:password@]host[:port]`; the password (or token) never reaches a report. */
function natsBackend(url: string): Backend {
  const usage = 'write nats://host:port or nats://user:pass@host:port';
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new ConfigError(`'${redactNatsUrl(url)}' is not a valid NATS URL; ${usage}`, { path: 'transport' });
  }
  if (parsed.hostname === '' || !/^\/?$/.test(parsed.pathname) || parsed.search !== '' || parsed.hash !== '') {
    throw new ConfigError(`'${redactNatsUrl(url)}' is not a NATS URL; ${usage}`, { path: 'transport' });
  }
  return { kind: 'nats', url, shown: redactNatsUrl(url) };
}

/** What the report names: the backend actually measured, not a database file it never opened. */
function reportedTransport(backend: Backend): string {
  if (backend.kind === 'memory') return 'memory:';
  if (backend.kind === 'redis' || backend.kind === 'amqp' || backend.kind === 'nats') return backend.shown;
  return backend.inMemory ? 'sqlite::memory:' : 'sqlite:';
}

/**
 * Measures agentbus on `options.transport` and the raw client for the same backend, one
 * after the other in this process, and reports them side by side. SQLite runs on fresh files
 * in a temp directory that is removed afterwards; the database the URL names is never opened.
 * Redis runs on the named server, on keys of its own that are deleted afterwards, and also
 * measures both raw clients (ioredis, node-redis; the faster is `raw`) and BullMQ. RabbitMQ runs
 * on the named broker, agentbus under a namespace of the run's own and raw amqplib on queues of
 * its own, both of `queueType` (default quorum), all deleted afterwards. NATS runs on the named
 * server, agentbus under a namespace of the run's own and raw nats.js on a file stream of its
 * own (`BENCH_RAW_<runId>`), all streams deleted afterwards. With `middleware`, agentbus runs
 * with it beside the bare bus (no middleware, the same messages), which has a transport of its
 * own of the same kind; the two take turns for `rounds` end-to-end rounds before the raw
 * baseline runs.
 */
export async function runBench(
  input: Partial<BenchOptions> = {},
  log: (text: string) => void = () => {},
  signal?: AbortSignal,
): Promise<BenchReport> {
  const given = resolveBenchOptions(input);
  const backend = backendOf(given.transport);
  if (backend.kind !== 'amqp' && given.queueType !== undefined) {
    throw new ConfigError('is for amqp:// runs only', { path: 'bench.queueType' });
  }
  const o: BenchOptions = {
    ...given,
    transport: reportedTransport(backend),
    ...(backend.kind === 'amqp' && { queueType: given.queueType ?? AMQP_TRANSPORT_DEFAULTS.queueType }),
  };
  const subjects: BenchSubject[] = [];
  let dir: string | undefined;
  let report: BenchReport;
  try {
    let busUrl =
      backend.kind === 'redis' || backend.kind === 'amqp' || backend.kind === 'nats' ? backend.url : 'memory:';
    let rawPath = ':memory:';
    if (backend.kind === 'sqlite') {
      if (backend.inMemory) busUrl = 'sqlite::memory:';
      else {
        dir = mkdtempSync(join(tmpdir(), 'agentbus-bench-'));
        busUrl = `sqlite:${join(dir, 'agentbus.db')}`;
        rawPath = join(dir, 'raw.db');
        const not = backend.ignoredPath ? `, not ${backend.ignoredPath}` : '';
        log(`sqlite: fresh files in ${dir} (removed afterwards${not})`);
      }
    }
    report = await measureBoth(o, backend, busUrl, rawPath, subjects, log, signal);
  } catch (err) {
    await closeAll(subjects);
    if (dir) rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  // After a success, a failing close is news; after a failure it would only hide the cause.
  const closeError = await closeAll(subjects);
  if (dir) rmSync(dir, { recursive: true, force: true });
  if (closeError) throw closeError.err;
  return report;
}

async function measureBoth(
  o: BenchOptions,
  backend: Backend,
  busUrl: string,
  rawPath: string,
  subjects: BenchSubject[],
  log: (text: string) => void,
  signal: AbortSignal | undefined,
): Promise<BenchReport> {
  // Random too on a shared server: two runs may start in the same millisecond there.
  const shared = backend.kind === 'redis' || backend.kind === 'amqp' || backend.kind === 'nats';
  const runId = shared
    ? `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`
    : Date.now().toString(36);
  const prefetch =
    o.prefetch ??
    (backend.kind === 'redis'
      ? RAW_REDIS_DEFAULTS.readCount
      : backend.kind === 'amqp'
        ? RAW_AMQP_DEFAULTS.prefetch
        : backend.kind === 'nats'
          ? RAW_NATS_DEFAULTS.maxMessages
          : o.concurrency);
  const main = openAgentbus(o, backend, runId, busUrl, o.middleware, prefetch, subjects, log);
  let busResult: SubjectResult;
  let vsBare: BareComparison | undefined;
  try {
    if (o.middleware.length === 0) busResult = await measureSubject(main.subject, o, latencyRate(o), log, signal);
    else {
      // The bare bus: the same messages (workflow ids included) without middleware, on a
      // transport of its own (fresh files on SQLite, its own keys, queues and streams on a server).
      const bare = openAgentbus(o, backend, `${runId}b`, bareBusUrl(busUrl), [], prefetch, subjects, log);
      try {
        ({ busResult, vsBare } = await measureBesideBare(o, main.subject, bare.subject, log, signal));
      } catch (err) {
        if (shared) await bare.dispose().catch(() => {});
        throw err;
      }
      await bare.dispose();
    }
  } catch (err) {
    // The caller closes it again and reports `err`; on a shared server its keys and queues need
    // it closed first.
    if (shared) await main.dispose().catch(() => {});
    throw err;
  }
  // Closed before the raw run starts, so its timers and statements do not run beside it.
  await main.dispose();
  const report = await measureRaw(o, backend, runId, rawPath, prefetch, busResult, subjects, log, signal);
  return vsBare ? { ...report, ...middlewareFields(o, vsBare) } : report;
}

/** The latency phase's offered rate: `--rate`, or a fraction of the end-to-end throughput. */
const latencyRate = (o: BenchOptions) => (e2ePerS: number) => o.rate ?? e2ePerS * o.rateFraction;

/**
 * Measures agentbus with middleware beside the bare bus: both warmed up first (whichever runs
 * first would otherwise also warm up the code they share for the other), then every phase of
 * one and of the other (the bare bus's latency at the same offered rate), then `o.rounds - 1`
 * more end-to-end rounds of each, taking turns and alternating which goes first.
 */
async function measureBesideBare(
  o: BenchOptions,
  withMiddleware: BenchSubject,
  bare: BenchSubject,
  log: (text: string) => void,
  signal: AbortSignal | undefined,
): Promise<{ busResult: SubjectResult; vsBare: BareComparison }> {
  const timeoutMs = phaseTimeoutMs(o);
  if (o.warmupMessages > 0) {
    for (const subject of [withMiddleware, bare]) {
      log(`${subject.label}: warm-up (${o.warmupMessages} messages)`);
      await endToEnd(subject, 'warmup', o.warmupMessages, o, timeoutMs, signal);
    }
  }
  const warm = { ...o, warmupMessages: 0 };
  const busResult = await measureSubject(withMiddleware, warm, latencyRate(o), log, signal);
  const bareResult = await measureSubject(bare, warm, () => busResult.latency.ratePerS, log, signal);
  const rounds = { middleware: [busResult.e2ePerS], bare: [bareResult.e2ePerS] };
  const sides = [
    { subject: withMiddleware, results: rounds.middleware },
    { subject: bare, results: rounds.bare },
  ];
  for (let round = 2; round <= o.rounds; round++) {
    for (const { subject, results } of round % 2 === 0 ? [...sides].reverse() : sides) {
      log(`${subject.label}: end to end, round ${round} of ${o.rounds}`);
      results.push(await endToEnd(subject, `e2e${round}`, o.messages, o, timeoutMs, signal));
    }
  }
  return { busResult, vsBare: { bare: bareResult, rounds } };
}

/** The bare bus's own database file beside the middleware bus's (memory: and servers: the same URL). */
function bareBusUrl(busUrl: string): string {
  return busUrl.startsWith('sqlite:') && busUrl !== 'sqlite::memory:' ? busUrl.replace(/\.db$/, '-bare.db') : busUrl;
}

/** An agentbus subject on a transport and bus of its own. */
interface OpenedAgentbus {
  readonly subject: BenchSubject;
  /** Closes it, then deletes what it left on a shared server (that part never throws: it logs). */
  dispose(): Promise<void>;
}

/**
 * agentbus with `middleware` on a transport and bus of its own; `runId` names its topics and
 * groups, and on a shared server its keys, namespace or streams.
 */
function openAgentbus(
  o: BenchOptions,
  backend: Backend,
  runId: string,
  busUrl: string,
  middleware: readonly BenchMiddleware[],
  prefetch: number,
  subjects: BenchSubject[],
  log: (text: string) => void,
): OpenedAgentbus {
  // On Redis agentbus keeps its keys (registries included) under a prefix of the run's own; on
  // RabbitMQ its exchange and queues, on NATS its streams, under a namespace of the run's own.
  const transport = openTransport(
    busUrl,
    backend.kind === 'redis'
      ? { redis: { keyPrefix: agentbusKeyPrefix(runId) } }
      : backend.kind === 'amqp'
        ? { amqp: { namespace: agentbusNamespace(runId), queueType: o.queueType } }
        : backend.kind === 'nats'
          ? { nats: { namespace: agentbusNatsNamespace(runId) } }
          : {},
  );
  const stack = benchMiddlewareStack(middleware);
  const bus = createBus({ transport, source: 'bench', codec: codecByName(o.codec), middleware: stack.middleware });
  const channels: string[] = [];
  const withMiddleware = o.middleware.length > 0;
  const subject = recordingChannels(
    new AgentbusSubject(bus, {
      concurrency: o.concurrency,
      prefetch,
      runId,
      size: o.size,
      // The bare bus publishes the same messages as the middleware one: with workflow ids, and
      // with the type schema validation knows when it is on.
      workflows: withMiddleware ? o.workflows : undefined,
      type: o.middleware.includes('schema') ? BENCH_MESSAGE_TYPE : undefined,
      label: !withMiddleware
        ? 'agentbus'
        : middleware.length > 0
          ? `agentbus + ${middleware.join(' + ')}`
          : 'bare agentbus',
      onClose: stack.close,
    }),
    channels,
  );
  subjects.push(subject);
  return {
    subject,
    async dispose() {
      try {
        await subject.close();
      } finally {
        if (backend.kind === 'redis') await removeAgentbusKeys(backend.url, runId, log);
        if (backend.kind === 'amqp') await removeAgentbusAmqp(backend.url, runId, channels, log);
        if (backend.kind === 'nats') await removeAgentbusNats(backend.url, runId, log);
      }
    },
  };
}

/** Measures the raw baseline (and on Redis BullMQ) and reports it beside `busResult`. */
async function measureRaw(
  o: BenchOptions,
  backend: Backend,
  runId: string,
  rawPath: string,
  prefetch: number,
  busResult: SubjectResult,
  subjects: BenchSubject[],
  log: (text: string) => void,
  signal: AbortSignal | undefined,
): Promise<BenchReport> {
  if (backend.kind === 'redis') {
    const peers = await measureRedisPeers(o, backend.url, runId, busResult.latency.ratePerS, subjects, log, signal);
    return benchReport(o, prefetch, busResult, peers.rawByClient[peers.rawClient], peers);
  }
  if (backend.kind === 'amqp') {
    const queueType = o.queueType ?? AMQP_TRANSPORT_DEFAULTS.queueType;
    const raw = await RawAmqpSubject.open(backend.url, { runId, size: o.size, queueType });
    subjects.push(raw);
    const rawResult = await measureSubject(raw, o, () => busResult.latency.ratePerS, log, signal);
    return benchReport(o, prefetch, busResult, rawResult);
  }
  if (backend.kind === 'nats') {
    const raw = await RawNatsSubject.open(backend.url, { runId, size: o.size });
    subjects.push(raw);
    const rawResult = await measureSubject(raw, o, () => busResult.latency.ratePerS, log, signal);
    return benchReport(o, prefetch, busResult, rawResult, undefined, {
      retention: RAW_NATS_DEFAULTS.retention,
      publishWindow: RAW_NATS_DEFAULTS.publishWindow,
      maxMessages: RAW_NATS_DEFAULTS.maxMessages,
    });
  }
  const raw =
    backend.kind === 'memory'
      ? new RawMemorySubject(o.size, o.concurrency)
      : new RawSqliteSubject(rawPath, o.size, o.concurrency);
  subjects.push(raw);
  // Same offered rate as agentbus, so the latencies compare like for like.
  const rawResult = await measureSubject(raw, o, () => busResult.latency.ratePerS, log, signal);
  return benchReport(o, prefetch, busResult, rawResult);
}

/** The Redis transport's `keyPrefix` for one run: none of its keys is shared with a real bus. */
export const agentbusKeyPrefix = (runId: string) => `bench:agentbus:${runId}`;

/** The AMQP transport's `namespace` for one run: none of its exchanges or queues is shared with a real bus. */
export const agentbusNamespace = (runId: string) => `bench.${runId}`;

/**
 * The NATS transport's `namespace` for one run (a single token, no dots): its streams are
 * `AB_bench_<runId>` and `AB_bench_<runId>_DLQ`, shared with no real bus.
 */
export const agentbusNatsNamespace = (runId: string) => `bench_${runId}`;

/**
 * The consumer group of a channel of {@link AgentbusSubject}, which names it so: its group queue
 * on RabbitMQ is `<namespace>.q.<group>`.
 */
export const agentbusGroup = (runId: string, channel: string) => `bench-${runId}-${channel}`;

/** `subject`, recording in `names` the name of every channel it is asked for. */
function recordingChannels(subject: BenchSubject, names: string[]): BenchSubject {
  return {
    label: subject.label,
    channel(name: string): Promise<BenchChannel> {
      names.push(name);
      return subject.channel(name);
    },
    close: () => subject.close(),
  };
}

/**
 * The AMQP transport keeps its exchange and queues on the broker after the bus closes: the topic
 * exchange `<namespace>`, per group its queue, dead-letter exchange and queue and the retry
 * queues of the ladder (those that exist), and the group registry `<namespace>.groups`. Deletes
 * them all. Never throws: a failed cleanup must not hide the outcome of the run, so it is logged.
 */
export async function removeAgentbusAmqp(
  url: string,
  runId: string,
  channels: readonly string[],
  log: (text: string) => void,
): Promise<void> {
  const names = new AmqpNames(agentbusNamespace(runId));
  const groups = [...new Set(channels)].map((c) => agentbusGroup(runId, c));
  const queues = groups.flatMap((g) => [
    names.queue(g),
    names.deadLetterQueue(g),
    ...AMQP_TRANSPORT_DEFAULTS.retryLadderMs.map((ms) => names.retry(g, ms)),
  ]);
  queues.push(names.registry);
  const exchanges = [names.exchange, ...groups.map((g) => names.deadLetterExchange(g))];
  try {
    const deleted = await deleteAmqpEntities(url, queues, exchanges);
    log(
      `agentbus: deleted ${deleted.queues.length} queues and ${deleted.exchanges.length} exchanges ` +
        `of run ${runId} (namespace ${names.namespace})`,
    );
  } catch (err) {
    log(
      `agentbus: could not delete the RabbitMQ queues of run ${runId} (namespace ${names.namespace}): ${String(err)}`,
    );
  }
}

/**
 * The NATS transport keeps its file stream `AB_<namespace>` (with the groups' durable consumers)
 * and its dead-letter stream `AB_<namespace>_DLQ` after the bus closes. Deletes both (a missing
 * one is fine). Never throws: a failed cleanup must not hide the outcome of the run, so it is logged.
 */
export async function removeAgentbusNats(url: string, runId: string, log: (text: string) => void): Promise<void> {
  const names = new NatsNames(agentbusNatsNamespace(runId));
  const { namespace } = names;
  try {
    const deleted = await deleteNatsStreams(url, [names.stream, names.deadLetterStream]);
    const which = deleted.length > 0 ? `: ${deleted.join(', ')}` : '';
    log(`agentbus: deleted ${deleted.length} streams of run ${runId} (namespace ${namespace})${which}`);
  } catch (err) {
    log(`agentbus: could not delete the NATS streams of run ${runId} (namespace ${namespace}): ${String(err)}`);
  }
}

/**
 * The transport keeps streams, groups and registries on the server after the bus closes; they
 * all sit under the run's key prefix. Never throws: a failed cleanup must not hide the
 * outcome of the run, so it is logged.
 */
async function removeAgentbusKeys(url: string, runId: string, log: (text: string) => void): Promise<void> {
  const match = `${agentbusKeyPrefix(runId)}:*`;
  try {
    const n = await deleteKeysMatching(url, [match]);
    log(`agentbus: deleted ${n} Redis keys of run ${runId} (${match})`);
  } catch (err) {
    log(`agentbus: could not delete the Redis keys of run ${runId} (${match}): ${String(err)}`);
  }
}

/** Closes every subject (close is idempotent); resolves with the first error rather than throwing it. */
async function closeAll(subjects: readonly BenchSubject[]): Promise<{ err: unknown } | undefined> {
  let first: { err: unknown } | undefined;
  for (const s of subjects) {
    try {
      await s.close();
    } catch (err) {
      first ??= { err };
    }
  }
  return first;
}
