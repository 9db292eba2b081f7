import type { BenchOptions } from './bench-options.js';
import type { BenchSubject } from './bench-subject.js';
import { BullmqSubject } from './bullmq-subject.js';
import { measureSubject, type SubjectResult } from './phases.js';
import { RawRedisSubject } from './raw-redis-subject.js';
import { REDIS_CLIENT_KINDS, type RedisClientKind } from './redis-clients.js';

/** What a `redis://` run measures beside agentbus: both raw clients and BullMQ. */
export interface RedisPeerResults {
  /** The raw client with the higher end-to-end throughput: the report's `raw`. */
  readonly rawClient: RedisClientKind;
  readonly rawByClient: Readonly<Record<RedisClientKind, SubjectResult>>;
  readonly bullmq: SubjectResult;
}

/**
 * Measures raw ioredis, raw node-redis and BullMQ on `url`, one after the other, each at the
 * offered latency rate `latencyRatePerS`. Each subject is closed (its keys deleted) before the
 * next starts, so none measures beside another's connections or data; each is also pushed on
 * `opened` first, so a caller can close what a failure left open.
 */
export async function measureRedisPeers(
  o: BenchOptions,
  url: string,
  runId: string,
  latencyRatePerS: number,
  opened: BenchSubject[],
  log: (text: string) => void,
  signal?: AbortSignal,
): Promise<RedisPeerResults> {
  const measure = async (subject: BenchSubject) => {
    opened.push(subject);
    const result = await measureSubject(subject, o, () => latencyRatePerS, log, signal);
    await subject.close();
    return result;
  };
  const rawByClient = {} as Record<RedisClientKind, SubjectResult>;
  for (const kind of REDIS_CLIENT_KINDS) {
    rawByClient[kind] = await measure(await RawRedisSubject.open(kind, url, { runId, size: o.size }));
  }
  const bullmq = await measure(await BullmqSubject.open(url, { runId, size: o.size }));
  return { rawClient: fasterRawClient(rawByClient), rawByClient, bullmq };
}

/** The raw client with the higher end-to-end throughput (ioredis on a tie). */
export function fasterRawClient(rawByClient: Readonly<Record<RedisClientKind, SubjectResult>>): RedisClientKind {
  return rawByClient['node-redis'].e2ePerS > rawByClient.ioredis.e2ePerS ? 'node-redis' : 'ioredis';
}
