import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, codecByName, createBus } from '@agentbus/core';
import { openTransport, parseTransportUrl } from '../open-transport.js';
import { AgentbusSubject } from './agentbus-subject.js';
import { type BenchOptions, resolveBenchOptions } from './bench-options.js';
import { type BenchReport, benchReport } from './bench-report.js';
import type { BenchSubject } from './bench-subject.js';
import { measureSubject } from './phases.js';
import { RawMemorySubject } from './raw-memory-subject.js';
import { RawSqliteSubject } from './raw-sqlite-subject.js';

type Backend =
  | { readonly kind: 'memory' }
  | { readonly kind: 'sqlite'; readonly inMemory: boolean; readonly ignoredPath?: string };

/** `sqlite:` alone is fine here: the benchmark picks its own files. */
function backendOf(url: string): Backend {
  if (url === 'sqlite:') return { kind: 'sqlite', inMemory: false };
  const parsed = parseTransportUrl(url);
  if (parsed.scheme === 'memory') return { kind: 'memory' };
  if (parsed.scheme === 'sqlite') {
    return parsed.path === ':memory:'
      ? { kind: 'sqlite', inMemory: true }
      : { kind: 'sqlite', inMemory: false, ignoredPath: parsed.path };
  }
  throw new ConfigError(`the benchmark supports memory: and sqlite: so far, not ${url}`, { path: 'transport' });
}

/** What the report names: the backend actually measured, not a database file it never opened. */
function reportedTransport(backend: Backend): string {
  if (backend.kind === 'memory') return 'memory:';
  return backend.inMemory ? 'sqlite::memory:' : 'sqlite:';
}

/**
 * Measures agentbus on `options.transport` and the raw client for the same backend, one
 * after the other in this process, and reports them side by side. SQLite runs on fresh files
 * in a temp directory that is removed afterwards; the database the URL names is never opened.
 */
export async function runBench(
  input: Partial<BenchOptions> = {},
  log: (text: string) => void = () => {},
  signal?: AbortSignal,
): Promise<BenchReport> {
  const given = resolveBenchOptions(input);
  const backend = backendOf(given.transport);
  const o = { ...given, transport: reportedTransport(backend) };
  const subjects: BenchSubject[] = [];
  let dir: string | undefined;
  let report: BenchReport;
  try {
    let busUrl = 'memory:';
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
  const runId = Date.now().toString(36);
  const bus = createBus({ transport: openTransport(busUrl), source: 'bench', codec: codecByName(o.codec) });
  const agentbus = new AgentbusSubject(bus, { concurrency: o.concurrency, runId, size: o.size });
  subjects.push(agentbus);
  const busResult = await measureSubject(agentbus, o, (e2e) => o.rate ?? e2e * o.rateFraction, log, signal);
  // Closed before the raw run starts, so its timers and statements do not run beside it.
  await agentbus.close();

  const raw =
    backend.kind === 'memory'
      ? new RawMemorySubject(o.size, o.concurrency)
      : new RawSqliteSubject(rawPath, o.size, o.concurrency);
  subjects.push(raw);
  // Same offered rate as agentbus, so the latencies compare like for like.
  const rawResult = await measureSubject(raw, o, () => busResult.latency.ratePerS, log, signal);
  return benchReport(o, busResult, rawResult);
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
