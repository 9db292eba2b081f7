import type { Queue, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import { type BenchChannel, type BenchSubject, type Consumers, padding } from './bench-subject.js';
import { connectIoredisClient, loadBullmq } from './redis-clients.js';

interface JobData {
  readonly t: number;
  readonly pad: string;
}

/** How the BullMQ peer runs. */
export const BULLMQ_DEFAULTS = Object.freeze({
  /** Jobs each Worker processes at once. */
  concurrency: 100,
  jobName: 'bench',
});

/** The key prefix of a run's queues: every BullMQ key of the run starts with `bench:bullmq:<runId>:`. */
export function bullmqPrefix(runId: string): string {
  return `bench:bullmq:${runId}`;
}

/** Options of {@link BullmqSubject.open}. */
export interface BullmqSubjectOptions {
  readonly runId: string;
  /** Payload bytes per job (as the JSON padding agentbus sends). */
  readonly size: number;
}

type Bullmq = Awaited<ReturnType<typeof loadBullmq>>;

/**
 * The peer for `redis://`: BullMQ on the same Redis, as its users run it for a job queue. One
 * Queue per channel; producers `addBulk` (jobs removed once completed or failed, so Redis does
 * not fill up); `consumers` Workers with concurrency 100 and a no-op processor. BullMQ talks to
 * Redis through ioredis; in ESM it is handed connections rather than options.
 */
export class BullmqSubject implements BenchSubject {
  readonly label = 'BullMQ';
  readonly #queues: Queue<JobData>[] = [];
  readonly #pad: string;
  readonly #prefix: string;
  #closed = false;

  private constructor(
    private readonly url: string,
    options: BullmqSubjectOptions,
    private readonly bullmq: Bullmq,
    /** Shared by the queues; workers get their own. */
    private readonly connection: Redis,
  ) {
    this.#pad = padding(options.size);
    this.#prefix = bullmqPrefix(options.runId);
  }

  /** Loads BullMQ and connects; rejects if a library is missing or Redis is unreachable. */
  static async open(url: string, options: BullmqSubjectOptions): Promise<BullmqSubject> {
    const bullmq = await loadBullmq();
    return new BullmqSubject(url, options, bullmq, await connect(url));
  }

  async channel(name: string): Promise<BenchChannel> {
    const { Queue, Worker } = this.bullmq;
    const { url } = this;
    const prefix = this.#prefix;
    const queue = new Queue<JobData>(name, { connection: this.connection, prefix });
    this.#queues.push(queue);
    await queue.waitUntilReady();
    const pad = this.#pad;
    const { jobName, concurrency } = BULLMQ_DEFAULTS;
    const opts = { removeOnComplete: true, removeOnFail: true };
    return {
      async publishBatch(count) {
        const data: JobData = { t: performance.now(), pad };
        const jobs = new Array<{ name: string; data: JobData; opts: typeof opts }>(count);
        for (let i = 0; i < count; i++) jobs[i] = { name: jobName, data, opts };
        await queue.addBulk(jobs);
      },
      async publishOne(sentAtMs) {
        await queue.add(jobName, { t: sentAtMs, pad }, opts);
      },
      async consume(consumers, onMessage): Promise<Consumers> {
        const workers: Worker<JobData>[] = [];
        const connections: Redis[] = [];
        let failure: { err: unknown } | undefined;
        try {
          for (let i = 0; i < consumers; i++) {
            const connection = await connect(url);
            connections.push(connection);
            const worker = new Worker<JobData>(name, async (job) => onMessage(job.data.t), {
              connection,
              prefix,
              concurrency,
            });
            worker.on('error', (err) => {
              failure ??= { err };
            });
            workers.push(worker);
            await worker.waitUntilReady();
          }
        } catch (err) {
          await stopWorkers(workers, connections);
          throw err;
        }
        return {
          stop: async () => {
            await stopWorkers(workers, connections);
            if (failure) throw failure.err;
          },
        };
      },
    };
  }

  /** Obliterates every queue the subject created and closes its connections; idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    try {
      for (const q of this.#queues) {
        await q.obliterate({ force: true });
        await q.close();
      }
    } finally {
      await this.connection.quit();
    }
  }
}

/**
 * BullMQ requires `maxRetriesPerRequest: null` on worker connections (its blocking commands
 * must not fail after a retry count).
 */
const connect = (url: string) => connectIoredisClient(url, { maxRetriesPerRequest: null });

async function stopWorkers(workers: readonly Worker<JobData>[], connections: readonly Redis[]): Promise<void> {
  try {
    await Promise.all(workers.map((w) => w.close()));
  } finally {
    await Promise.all(connections.map((c) => (c.status === 'end' ? undefined : c.quit())));
  }
}
