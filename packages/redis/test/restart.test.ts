import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, until } from '@agentbus/conformance';
import { createBus, silentLogger } from '@agentbus/core';
import { redisTransport } from '@agentbus/redis';
import { Redis } from 'ioredis';
import { afterAll, expect, it } from 'vitest';

/** A throwaway redis-server with AOF (appendfsync everysec) in its own directory. */
class ThrowawayRedis {
  #proc: ChildProcess | undefined;
  constructor(
    readonly port: number,
    readonly dir: string,
  ) {}

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    this.#proc = spawn(
      'redis-server',
      [
        '--port',
        String(this.port),
        '--bind',
        '127.0.0.1',
        '--dir',
        this.dir,
        '--appendonly',
        'yes',
        '--appendfsync',
        'everysec',
        '--save',
        '',
      ],
      { stdio: 'ignore' },
    );
    const probe = new Redis(this.port, '127.0.0.1', {
      lazyConnect: true,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
    });
    probe.on('error', () => {});
    await until(
      async () => {
        try {
          if (probe.status !== 'ready') await probe.connect();
          return (await probe.ping()) === 'PONG';
        } catch {
          probe.disconnect();
          return false;
        }
      },
      10_000,
      'redis-server to start',
    );
    probe.disconnect();
  }

  /** A clean shutdown (SIGTERM): Redis flushes the AOF before it exits. */
  async stop(): Promise<void> {
    const proc = this.#proc;
    if (!proc || proc.exitCode !== null) return;
    const exited = new Promise((r) => proc.once('exit', r));
    proc.kill('SIGTERM');
    await exited;
  }
}

const dir = mkdtempSync(join(tmpdir(), 'agentbus-redis-restart-'));
let server: ThrowawayRedis | undefined;
afterAll(async () => {
  await server?.stop();
  rmSync(dir, { recursive: true, force: true });
});

it('resumes consuming after Redis restarts, and every publish that resolved before the restart is processed', async () => {
  server = new ThrowawayRedis(await freePort(), dir);
  await server.start();
  const transport = redisTransport({ url: server.url, keyPrefix: 'restart', pollIntervalMs: 50 });
  const bus = createBus({ transport, logger: silentLogger });
  const processed = new Set<number>();
  // Slower than the publisher, so a backlog is waiting in Redis when it restarts.
  await bus.subscribe<{ n: number }>(
    'jobs.run',
    async (d) => {
      await new Promise((r) => setTimeout(r, 8));
      processed.add(d.data.n);
    },
    { group: 'workers', concurrency: 2, ackTimeoutMs: 2_000 },
  );

  const resolvedBeforeRestart = new Set<number>();
  const resolved = new Set<number>();
  let n = 0;
  let publishing = true;
  let restarted = false;
  const publisher = (async () => {
    while (publishing) {
      const k = n++;
      try {
        await bus.publish('jobs.run', { n: k });
        resolved.add(k);
        if (!restarted) resolvedBeforeRestart.add(k);
      } catch {
        // Refused during the outage: not acknowledged, so no promise to keep.
      }
      await new Promise((r) => setTimeout(r, 2));
    }
  })();

  await until(() => processed.size >= 200, 20_000, 'consumption before the restart');
  restarted = true;
  await server.stop();
  const backlog = [...resolvedBeforeRestart].filter((k) => !processed.has(k));
  // Not a wait for a condition: the outage itself, so publishes and claims meet a server that is down.
  await new Promise((r) => setTimeout(r, 300));
  await server.start();
  const afterRestart = processed.size;
  await until(() => processed.size >= afterRestart + 200, 30_000, 'consumption after the restart');
  publishing = false;
  await publisher;

  await until(() => [...resolved].every((k) => processed.has(k)), 30_000, 'every acknowledged publish processed');
  expect(resolvedBeforeRestart.size).toBeGreaterThan(200);
  // Messages that were only in Redis when it went down came back with it.
  expect(backlog.length).toBeGreaterThan(0);
  for (const k of resolvedBeforeRestart) expect(processed.has(k)).toBe(true);
  await bus.close();
}, 120_000);
