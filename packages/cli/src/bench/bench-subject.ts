/**
 * What the phases drive: agentbus on a transport, or the raw client for the same backend.
 * Both sides implement the same three operations so every phase measures them identically.
 */
export interface BenchSubject {
  /** Shown in reports, e.g. `agentbus` or `raw better-sqlite3`. */
  readonly label: string;
  /**
   * A fresh, isolated queue for one phase (its own topic and group, table or array), declared
   * so that messages published from now on are kept for its consumers.
   */
  channel(name: string): Promise<BenchChannel>;
  close(): Promise<void>;
}

/** One isolated queue of a subject, used by a single phase. */
export interface BenchChannel {
  /** Publishes `count` messages as one batch (one transport round / one transaction). */
  publishBatch(count: number): Promise<void>;
  /** Publishes one message carrying `sentAtMs` (a `performance.now()` stamp). */
  publishOne(sentAtMs: number): Promise<void>;
  /**
   * Starts `consumers` competing consumers; `onMessage` runs once per message handled and
   * acked, with the message's send stamp. Resolves once they are consuming.
   */
  consume(consumers: number, onMessage: (sentAtMs: number) => void): Promise<Consumers>;
}

/** Running consumers of a channel. */
export interface Consumers {
  stop(): Promise<void>;
}

/** A string padding so that `{"t":<stamp>,"pad":"…"}` is about `size` bytes of JSON. */
export function padding(size: number): string {
  const overhead = '{"t":1234567.123456,"pad":""}'.length;
  return 'x'.repeat(Math.max(0, size - overhead));
}
