import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '@agentbus/conformance';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';

/**
 * The nats-server binary: `$NATS_SERVER` if set, else the Debian location if it exists (`/usr/sbin`
 * is not on every user's PATH), else whatever `nats-server` the PATH finds.
 */
function natsServerBinary(): string {
  if (process.env.NATS_SERVER) return process.env.NATS_SERVER;
  return existsSync('/usr/sbin/nats-server') ? '/usr/sbin/nats-server' : 'nats-server';
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export interface ThrowawayNatsOptions {
  /** How long `start()` waits for the server to accept connections with JetStream ready. Default 15 s. */
  readonly startTimeoutMs?: number;
  /** How long `stop()` waits for a clean exit after SIGTERM before it SIGKILLs. Default 15 s. */
  readonly stopTimeoutMs?: number;
}

/**
 * A separate, throwaway nats-server with JetStream: its own port on 127.0.0.1 (chosen on the first
 * `start()` and kept across restarts), its own server name and its own store directory, which
 * `dispose()` removes. No cluster, gateway, leafnode or monitoring listeners, so it shares nothing
 * with a server already running on this machine.
 *
 * The server is a direct child of this process, so its exit is observed at once and a boot
 * failure is reported with the server's own output instead of a timeout. A process 'exit' hook
 * kills a server that is still running when the test process ends.
 */
export class ThrowawayNats {
  /** Holds the JetStream store (`<dir>/jetstream`), which survives `stop()` and `restart()`. */
  readonly dir = mkdtempSync(join(tmpdir(), 'agentbus-nats-'));
  /** 0 until the first `start()`. */
  port = 0;
  /** Milliseconds the last `start()` took, from spawn to a JetStream account-info round trip. */
  bootMs = 0;
  /** Milliseconds the last `stop()` took, from SIGTERM to the process's exit. */
  stopMs = 0;
  /** Times the server was started. */
  starts = 0;
  readonly #startTimeoutMs: number;
  readonly #stopTimeoutMs: number;
  #proc: ChildProcess | undefined;
  #exited: Promise<void> | undefined;
  /** The end of the current (or last) run's output. */
  #output = '';
  #hooked = false;
  #onProcessExit = () => {
    this.#killNow();
    rmSync(this.dir, { recursive: true, force: true });
  };

  constructor(options: ThrowawayNatsOptions = {}) {
    this.#startTimeoutMs = options.startTimeoutMs ?? 15_000;
    this.#stopTimeoutMs = options.stopTimeoutMs ?? 15_000;
  }

  /** The server's name; the same on every start. */
  get serverName(): string {
    return `agentbus-test-${this.port}`;
  }

  get url(): string {
    return `nats://127.0.0.1:${this.port}`;
  }

  /** The JetStream store directory (pass to `-sd`). */
  get storeDir(): string {
    return join(this.dir, 'store');
  }

  /** The server's output (its log) since it was last started; the last 16 kB. */
  get log(): string {
    return this.#output;
  }

  /** Whether the server process is alive. */
  get running(): boolean {
    const proc = this.#proc;
    return proc !== undefined && proc.pid !== undefined && proc.exitCode === null && proc.signalCode === null;
  }

  /** The server's process id while it runs. */
  get pid(): number | undefined {
    return this.running ? this.#proc?.pid : undefined;
  }

  /**
   * Starts the server (on the port of the previous run, if there was one, and always on the same
   * store directory) and waits until a client can connect and get the JetStream account info.
   */
  async start(): Promise<void> {
    if (this.running) throw new Error(`ThrowawayNats already running (pid ${this.#proc?.pid})`);
    if (this.port === 0) this.port = await freePort();
    if (!this.#hooked) {
      // If the test process exits without dispose(), the server must not outlive it.
      process.once('exit', this.#onProcessExit);
      this.#hooked = true;
    }
    this.#output = '';
    const started = Date.now();
    const binary = natsServerBinary();
    const proc = spawn(
      binary,
      [
        '-a',
        '127.0.0.1',
        '-p',
        String(this.port),
        // The same name on every start: JetStream's state is tied to the server it belongs to.
        '-n',
        this.serverName,
        '-js',
        '-sd',
        this.storeDir,
      ],
      { cwd: this.dir, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    this.#proc = proc;
    this.starts++;
    const keep = (chunk: Buffer) => {
      this.#output = (this.#output + chunk.toString('utf8')).slice(-16_000);
    };
    proc.stdout?.on('data', keep);
    proc.stderr?.on('data', keep);
    let exitInfo: string | undefined;
    this.#exited = new Promise<void>((resolve) => {
      proc.once('error', (err) => {
        exitInfo = `could not run ${binary}: ${err.message}`;
        resolve();
      });
      proc.once('exit', (code, signal) => {
        exitInfo = `nats-server exited (${signal ?? `code ${code}`})`;
        resolve();
      });
    });

    const deadline = started + this.#startTimeoutMs;
    let lastError = 'no attempt yet';
    for (;;) {
      if (exitInfo) throw new Error(`${exitInfo} before it was ready:\n${this.#output}`);
      if (Date.now() > deadline) {
        const reason = `nats-server on port ${this.port} not ready after ${this.#startTimeoutMs} ms (last probe: ${lastError})`;
        this.#killNow();
        await this.#exited;
        throw new Error(`${reason}:\n${this.#output}`);
      }
      const probe = await this.#probe();
      if (probe === true) break;
      lastError = probe;
      await sleep(25);
    }
    this.bootMs = Date.now() - started;
  }

  /** One readiness probe: connect, then a JetStream account-info request. True, or why not. */
  async #probe(): Promise<true | string> {
    let nc: Awaited<ReturnType<typeof connect>> | undefined;
    try {
      nc = await connect({ servers: this.url, reconnect: false, timeout: 1_000, name: 'throwaway-nats-probe' });
      // Not some other server that took the port (e.g. while ours was down for a restart).
      const name = nc.info?.server_name;
      if (name !== this.serverName) return `port ${this.port} is served by ${name ?? 'an unnamed server'}, not by us`;
      const jsm = await jetstreamManager(nc, { timeout: 1_000 });
      await jsm.getAccountInfo();
      return true;
    } catch (err) {
      return err instanceof Error ? err.message : String(err);
    } finally {
      await nc?.close().catch(() => {});
    }
  }

  /**
   * A clean shutdown: SIGTERM, and waits for the process to exit. nats-server acknowledges a
   * JetStream publish before it syncs to disk; its shutdown on SIGTERM flushes the streams, so
   * every acknowledged message is on disk when this resolves (a SIGKILL gives no such promise).
   * SIGKILLs the server if it has not exited within the stop timeout.
   */
  async stop(): Promise<void> {
    const proc = this.#proc;
    if (!proc || !this.running) return;
    const started = Date.now();
    proc.kill('SIGTERM');
    let timer: NodeJS.Timeout | undefined;
    const exited = await Promise.race([
      this.#exited?.then(() => true),
      new Promise<boolean>((r) => {
        timer = setTimeout(() => r(false), this.#stopTimeoutMs);
      }),
    ]);
    clearTimeout(timer);
    if (!exited) {
      this.#killNow();
      await this.#exited;
      throw new Error(
        `nats-server did not exit within ${this.#stopTimeoutMs} ms of SIGTERM and was killed:\n${this.#output}`,
      );
    }
    this.stopMs = Date.now() - started;
  }

  /** SIGKILL: no flush, no goodbye to clients. Waits for the process to exit. */
  async kill(): Promise<void> {
    if (!this.running) return;
    this.#killNow();
    await this.#exited;
  }

  /** `stop()` then `start()`: the same port, the same store, so the streams survive. */
  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }

  /**
   * Stops the server (SIGKILL if it will not stop) and removes its directory. Safe whatever state
   * the server is in, also when `start()` failed or never ran; never throws (for `afterAll`).
   */
  async dispose(): Promise<void> {
    try {
      await this.stop();
    } catch {
      // stop() killed it already.
    }
    await this.kill();
    process.removeListener('exit', this.#onProcessExit);
    this.#hooked = false;
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** Synchronous and best effort, so it also works from a process 'exit' listener. */
  #killNow(): void {
    if (!this.running) return;
    try {
      this.#proc?.kill('SIGKILL');
    } catch {
      // Already gone.
    }
  }
}
