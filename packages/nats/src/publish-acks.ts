import { BusError, ConnectionError, RateLimitedError, TimeoutError } from '@agentbus/core';
import { createInbox, type Msg, type MsgHdrs, type NatsConnection, type Subscription } from '@nats-io/transport-node';

/** One message to publish to JetStream. */
export interface Outgoing {
  readonly subject: string;
  readonly data: Uint8Array;
  readonly headers: MsgHdrs;
}

interface Batch {
  left: number;
  readonly at: number;
  readonly resolve: () => void;
  readonly reject: (err: BusError) => void;
}

/**
 * Publishes to JetStream and collects its acknowledgements on one wildcard inbox per connection,
 * one promise per batch and one timer for all: the client's own `js.publish` costs a request, a
 * timer and a promise race per message, which on this path is most of the CPU.
 */
export class PublishAcks {
  readonly #prefix: string;
  readonly #sub: Subscription;
  readonly #pending = new Map<string, Batch>();
  readonly #sweeper: NodeJS.Timeout;
  #seq = 0;

  constructor(
    private readonly nc: NatsConnection,
    private readonly timeoutMs: number,
    /** The server answered as if the stream were gone (no responders). */
    private readonly onNoStream: () => void,
  ) {
    this.#prefix = `${createInbox()}.`;
    this.#sub = nc.subscribe(`${this.#prefix}*`, { callback: (err, msg) => this.#onAck(err, msg) });
    this.#sweeper = setInterval(() => this.#sweep(), Math.min(1_000, Math.max(50, timeoutMs / 4)));
    this.#sweeper.unref();
  }

  /** Resolves once JetStream acknowledged every message (stored, or a duplicate of one stored). */
  send(items: readonly Outgoing[]): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const batch: Batch = { left: items.length, at: Date.now(), resolve, reject };
      try {
        for (const m of items) {
          const token = (++this.#seq).toString(36);
          this.#pending.set(token, batch);
          this.nc.publish(m.subject, m.data, { reply: this.#prefix + token, headers: m.headers });
        }
      } catch (err) {
        this.#fail(batch, new ConnectionError(`nats publish failed: ${(err as Error).message}`, { cause: err }));
      }
    });
  }

  /** Fails every publish waiting for its acknowledgement (the connection was lost). */
  failAll(err: BusError): void {
    for (const batch of new Set(this.#pending.values())) this.#fail(batch, err);
  }

  close(): void {
    clearInterval(this.#sweeper);
    this.failAll(new ConnectionError('nats connection closed before the publish was acknowledged'));
    this.#sub.unsubscribe();
  }

  #onAck(err: Error | null, msg: Msg): void {
    if (err) return;
    const token = msg.subject.slice(this.#prefix.length);
    const batch = this.#pending.get(token);
    if (!batch) return; // timed out already
    this.#pending.delete(token);
    const problem = this.#problem(msg);
    if (problem) this.#fail(batch, problem);
    else if (--batch.left === 0) batch.resolve();
  }

  /** What is wrong with an acknowledgement, or undefined for a good one. */
  #problem(msg: Msg): BusError | undefined {
    if (msg.headers?.code === 503) {
      this.onNoStream();
      return new ConnectionError('nats publish failed: no stream answered for the subject (no responders)');
    }
    let reply: { error?: { code?: number; description?: string } };
    try {
      reply = JSON.parse(new TextDecoder().decode(msg.data)) as typeof reply;
    } catch {
      return new BusError('nats publish failed: unreadable acknowledgement');
    }
    const e = reply.error;
    if (!e) return undefined;
    const text = `nats publish refused: ${e.description ?? 'error'} (${e.code ?? '?'})`;
    if (e.code === 503) {
      this.onNoStream();
      return new ConnectionError(text);
    }
    return /exceeded|limit|full/i.test(e.description ?? '') ? new RateLimitedError(text) : new BusError(text);
  }

  #fail(batch: Batch, err: BusError): void {
    for (const [token, b] of this.#pending) if (b === batch) this.#pending.delete(token);
    batch.left = -1;
    batch.reject(err);
  }

  #sweep(): void {
    const cutoff = Date.now() - this.timeoutMs;
    for (const batch of new Set(this.#pending.values())) {
      if (batch.at <= cutoff) {
        this.#fail(batch, new TimeoutError(`JetStream did not acknowledge the publish within ${this.timeoutMs} ms`));
      }
    }
  }
}
