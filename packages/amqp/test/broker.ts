import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, reachable } from '@agentbus/conformance';

/**
 * Where the RabbitMQ scripts live. Debian's `/usr/sbin/rabbitmq-server` is a wrapper that, run as
 * root, re-runs the script as the `rabbitmq` user through `su` (which could not write our temporary
 * directory and would drop our environment); the real scripts are in `/usr/lib/rabbitmq/bin`.
 * Elsewhere (a generic-unix install) the scripts on PATH are the real ones.
 */
function rabbitScript(name: 'rabbitmq-server' | 'rabbitmqctl'): string {
  const debian = `/usr/lib/rabbitmq/bin/${name}`;
  return existsSync(debian) ? debian : name;
}

export interface ThrowawayRabbitOptions {
  /** How long `start()` waits for the node to boot. Default 60 s. */
  readonly startTimeoutMs?: number;
}

/**
 * A separate, throwaway RabbitMQ node on this machine: its own node name, AMQP port, Erlang
 * distribution port, Erlang cookie (HOME points at its directory), database, logs, config and
 * plugin list, all in one temporary directory that `stop()` removes. It registers with the
 * machine's epmd like any node but shares nothing else with a broker already running here.
 *
 * The node runs in the foreground as a child of this process, so its exit is observed directly
 * and a boot failure is reported with the node's own output instead of a timeout.
 */
export class ThrowawayRabbit {
  readonly node = `abtest-${randomBytes(4).toString('hex')}@localhost`;
  readonly dir = mkdtempSync(join(tmpdir(), 'agentbus-rabbit-'));
  port = 0;
  distPort = 0;
  /** Milliseconds the last `start()` took, from spawn to `await_startup` succeeding. */
  bootMs = 0;
  readonly #startTimeoutMs: number;
  #proc: ChildProcess | undefined;
  #exited: Promise<void> | undefined;
  #output = '';
  #onProcessExit = () => {
    this.#killNow();
    rmSync(this.dir, { recursive: true, force: true });
  };

  constructor(options: ThrowawayRabbitOptions = {}) {
    this.#startTimeoutMs = options.startTimeoutMs ?? 60_000;
  }

  get url(): string {
    return `amqp://guest:guest@127.0.0.1:${this.port}`;
  }

  /** The environment both the server and rabbitmqctl need to address this node. */
  #env(): NodeJS.ProcessEnv {
    const env: NodeJS.ProcessEnv = {};
    // An outer RABBITMQ_* or ERL_* setting (e.g. a developer's RABBITMQ_NODENAME) must not leak in.
    for (const [k, v] of Object.entries(process.env)) {
      if (!k.startsWith('RABBITMQ_') && !k.startsWith('ERL_')) env[k] = v;
    }
    return {
      ...env,
      // The Erlang cookie is read from $HOME/.erlang.cookie: ours, not root's nor rabbitmq's.
      HOME: this.dir,
      RABBITMQ_NODENAME: this.node,
      RABBITMQ_DIST_PORT: String(this.distPort),
      RABBITMQ_MNESIA_BASE: join(this.dir, 'mnesia'),
      RABBITMQ_LOG_BASE: join(this.dir, 'log'),
      RABBITMQ_CONFIG_FILE: join(this.dir, 'rabbitmq.conf'),
      RABBITMQ_ADVANCED_CONFIG_FILE: join(this.dir, 'advanced.config'),
      // Not /etc/rabbitmq/rabbitmq-env.conf: that one names the main node.
      RABBITMQ_CONF_ENV_FILE: join(this.dir, 'rabbitmq-env.conf'),
      // No plugins: the management plugin would compete for port 15672.
      RABBITMQ_ENABLED_PLUGINS_FILE: join(this.dir, 'enabled_plugins'),
      RABBITMQ_PID_FILE: join(this.dir, 'node.pid'),
      ERL_CRASH_DUMP: join(this.dir, 'log', 'erl_crash.dump'),
      ERL_EPMD_ADDRESS: '127.0.0.1',
      // The distribution listener on loopback only, like the main node's.
      ERL_FLAGS: '-kernel inet_dist_use_interface {127,0,0,1}',
    };
  }

  /** Boots the node and waits until `rabbitmqctl await_startup` says it is running. */
  async start(): Promise<void> {
    if (this.#proc) throw new Error('ThrowawayRabbit already started');
    this.port = await freePort();
    this.distPort = await freePort();
    mkdirSync(join(this.dir, 'mnesia'));
    mkdirSync(join(this.dir, 'log'));
    const cookie = join(this.dir, '.erlang.cookie');
    writeFileSync(cookie, randomBytes(16).toString('hex').toUpperCase());
    chmodSync(cookie, 0o400);
    writeFileSync(
      join(this.dir, 'rabbitmq.conf'),
      [`listeners.tcp.1 = 127.0.0.1:${this.port}`, 'log.console = true', 'log.console.level = warning', ''].join('\n'),
    );
    writeFileSync(join(this.dir, 'advanced.config'), '[].\n');
    writeFileSync(join(this.dir, 'rabbitmq-env.conf'), '');
    writeFileSync(join(this.dir, 'enabled_plugins'), '[].\n');

    const started = Date.now();
    const proc = spawn(rabbitScript('rabbitmq-server'), [], {
      cwd: this.dir,
      env: this.#env(),
      stdio: ['ignore', 'pipe', 'pipe'],
      // Its own process group, so that killing the group takes the VM along with the script.
      detached: true,
    });
    this.#proc = proc;
    // If the test process exits without calling stop(), the node must not outlive it.
    process.once('exit', this.#onProcessExit);
    const keep = (chunk: Buffer) => {
      this.#output = (this.#output + chunk.toString('utf8')).slice(-8_000);
    };
    proc.stdout?.on('data', keep);
    proc.stderr?.on('data', keep);
    let exitInfo: string | undefined;
    this.#exited = new Promise<void>((resolve) => {
      proc.once('error', (err) => {
        exitInfo = `could not run ${rabbitScript('rabbitmq-server')}: ${err.message}`;
        resolve();
      });
      proc.once('exit', (code, signal) => {
        exitInfo = `rabbitmq-server exited (${signal ?? code})`;
        resolve();
      });
    });

    const deadline = started + this.#startTimeoutMs;
    // The AMQP listener opens near the end of boot; polling the port is far cheaper than starting
    // rabbitmqctl (an Erlang VM, ~0.4 s of CPU) over and over while the node competes for CPU.
    for (;;) {
      if (exitInfo) throw new Error(`${exitInfo} before it was ready:\n${this.#diagnostics()}`);
      if (Date.now() > deadline) {
        throw new Error(
          `RabbitMQ node ${this.node} not listening after ${this.#startTimeoutMs} ms:\n${this.#diagnostics()}`,
        );
      }
      if (await reachable('127.0.0.1', this.port, 200)) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    await this.ctl('await_startup', '--timeout', String(Math.max(1, Math.ceil((deadline - Date.now()) / 1000))));
    this.bootMs = Date.now() - started;
  }

  /** The node's console output and the end of its log, for a boot failure's message. */
  #diagnostics(): string {
    let log = '';
    try {
      log = readFileSync(join(this.dir, 'log', `${this.node}.log`), 'utf8').slice(-4_000);
    } catch {
      // No log yet.
    }
    return `${this.#output}\n--- end of ${this.node}.log ---\n${log}`;
  }

  /** Runs `rabbitmqctl -n <node> <args>` against this node; rejects with its output on failure. */
  ctl(...args: string[]): Promise<string> {
    return new Promise((resolve, reject) => {
      execFile(
        rabbitScript('rabbitmqctl'),
        ['-n', this.node, ...args],
        { env: this.#env(), cwd: this.dir, timeout: 60_000 },
        (err, stdout, stderr) => {
          if (err) reject(new Error(`rabbitmqctl ${args.join(' ')} failed: ${err.message}\n${stdout}${stderr}`));
          else resolve(stdout);
        },
      );
    });
  }

  /** Stops the RabbitMQ application (connections drop, the port closes); the Erlang node stays up. */
  async stopApp(): Promise<void> {
    await this.ctl('stop_app');
  }

  /** Starts the RabbitMQ application again and waits until it accepts connections. */
  async startApp(): Promise<void> {
    await this.ctl('start_app');
    await this.ctl('await_startup', '--timeout', '30');
  }

  /**
   * Shuts the node down and removes its directory. Safe whatever state the node is in, also when
   * `start()` failed or never ran; never throws (for `afterAll`).
   */
  async stop(): Promise<void> {
    const proc = this.#proc;
    if (proc && this.#running()) {
      // The graceful way first; if the node does not answer (or is still booting), kill it.
      const asked = await this.ctl('stop').then(
        () => true,
        () => false,
      );
      let timer: NodeJS.Timeout | undefined;
      const gone =
        asked &&
        (await Promise.race([
          this.#exited?.then(() => true),
          new Promise<boolean>((r) => {
            timer = setTimeout(() => r(false), 10_000);
          }),
        ]));
      clearTimeout(timer);
      if (!gone) {
        this.#killNow();
        await this.#exited;
      }
    }
    process.removeListener('exit', this.#onProcessExit);
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** Whether the script that runs the node is still alive (it waits for the Erlang VM it started). */
  #running(): boolean {
    const proc = this.#proc;
    return proc !== undefined && proc.pid !== undefined && proc.exitCode === null && proc.signalCode === null;
  }

  /**
   * SIGKILLs the node's whole process group: the script, the Erlang VM it started and the VM's
   * helpers (epmd, if the VM had to start one, daemonizes out of the group and is left alone).
   * Synchronous and best effort, so it also works from a process 'exit' listener.
   */
  #killNow(): void {
    const pid = this.#proc?.pid;
    if (pid === undefined || !this.#running()) return;
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
}
