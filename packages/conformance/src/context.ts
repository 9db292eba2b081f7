import { randomUUID } from 'node:crypto';
import type { Transport, TransportCapabilities, TransportMessage } from '@agentbus/core';

/** How the suite reaches the transport under test. */
export interface ConformanceOptions {
  /** Shown in the describe block, e.g. `sqlite`. */
  readonly name: string;
  /**
   * Opens a new client of the backend under test. For persistent transports every call must
   * reach the same backend state (same file, same server), as a second process would.
   */
  readonly open: () => Transport | Promise<Transport>;
  /** What the transport declares; the suite checks it matches and skips tests that need more. */
  readonly capabilities: TransportCapabilities;
  /**
   * A module (absolute path or file URL) exporting `createTransport(arg: string): Transport`,
   * used to run a consumer in a child process that the suite SIGKILLs. Omit for in-process
   * transports; the process-kill tests are then skipped.
   */
  readonly childModule?: string;
  readonly childArg?: string;
  /**
   * The optional Transport methods the transport has; the suite checks that this matches and
   * skips the tests of a method declared absent. Default: neither.
   */
  readonly methods?: { readonly routeCount: boolean; readonly groupStats: boolean };
  /**
   * With `childModule`: how long an ephemeral group may outlive its consumer process once that is
   * SIGKILLed, with the settings of `createTransport` and of `open` (the suite waits at most this
   * long for it to be removed). Omit to skip that test.
   */
  readonly ephemeralCrashBoundMs?: number;
  /** Lease length the suite uses for redelivery tests (default 400 ms). */
  readonly ackTimeoutMs?: number;
  /** If set, the whole suite is skipped with this reason (e.g. server unreachable outside CI). */
  readonly skipReason?: string;
}

/** Per-test helpers: unique names, transports that are closed after the test. */
export class TestContext {
  readonly prefix: string;
  readonly #open: () => Transport | Promise<Transport>;
  readonly #transports: Transport[] = [];
  readonly #shared: boolean;
  #first: Promise<Transport> | undefined;
  readonly ackTimeoutMs: number;

  constructor(options: ConformanceOptions) {
    this.prefix = `ct${randomUUID().replaceAll('-', '').slice(0, 12)}`;
    this.#open = options.open;
    this.ackTimeoutMs = options.ackTimeoutMs ?? 400;
    // An in-process transport has no state outside its instance: one test shares one instance.
    this.#shared = !options.capabilities.crossProcess;
  }

  /** A topic unique to this test: `<prefix>.<suffix>`. */
  topic(suffix: string): string {
    return `${this.prefix}.${suffix}`;
  }

  group(name = 'g'): string {
    return `${this.prefix}-${name}`;
  }

  /** A client of the backend: a new one for cross-process transports, the test's one otherwise. */
  async open(): Promise<Transport> {
    if (this.#shared && this.#first) return this.#first;
    const opening = (async () => {
      const t = await this.#open();
      this.#transports.push(t);
      await t.connect();
      return t;
    })();
    this.#first ??= opening;
    return opening;
  }

  message(topic: string, overrides: Partial<TransportMessage> = {}): TransportMessage {
    const id = randomUUID();
    return {
      id,
      topic,
      body: Buffer.from(JSON.stringify({ id })),
      headers: { 'content-type': 'application/octet-stream' },
      priority: 4,
      ...overrides,
    };
  }

  async cleanup(): Promise<void> {
    for (const t of this.#transports.splice(0)) await t.close().catch(() => {});
  }
}
