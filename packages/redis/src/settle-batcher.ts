import type { Client } from './connection.js';
import { toBusError } from './redis-errors.js';

type BatchedOp = 'ack' | 'extend';

interface Batch {
  readonly op: BatchedOp;
  readonly key: string;
  readonly group: string;
  readonly consumer: string;
  readonly args: (string | number)[];
  readonly waiters: { resolve: () => void; reject: (err: unknown) => void }[];
}

/** Leases settled per script call at most (each is an id and a delivery count). */
const MAX_PER_CALL = 500;

/**
 * Collects the acks and lease renewals of one event-loop turn and sends one script call per
 * stream for them (all in one pipelined write), instead of a round of script calls per message.
 */
export class SettleBatcher {
  readonly #client: () => Client;
  #batches = new Map<string, Batch>();
  #scheduled: NodeJS.Immediate | undefined;

  constructor(client: () => Client) {
    this.#client = client;
  }

  add(op: BatchedOp, key: string, group: string, consumer: string, id: string, count: number): Promise<void> {
    const slot = `${op}\n${key}\n${group}\n${consumer}`;
    let batch = this.#batches.get(slot);
    if (!batch || batch.args.length >= MAX_PER_CALL * 2) {
      if (batch) this.#send(batch);
      batch = { op, key, group, consumer, args: [], waiters: [] };
      this.#batches.set(slot, batch);
    }
    batch.args.push(id, count);
    this.#scheduled ??= setImmediate(() => this.flush());
    const b = batch;
    return new Promise<void>((resolve, reject) => {
      b.waiters.push({ resolve, reject });
    });
  }

  /** Sends everything collected so far. */
  flush(): void {
    if (this.#scheduled) clearImmediate(this.#scheduled);
    this.#scheduled = undefined;
    const batches = this.#batches;
    this.#batches = new Map();
    for (const b of batches.values()) this.#send(b);
  }

  #send(b: Batch): void {
    let sent: Promise<number>;
    try {
      const client = this.#client();
      sent =
        b.op === 'ack'
          ? client.agentbusAck(1, b.key, b.group, b.consumer, ...b.args)
          : client.agentbusExtend(1, b.key, b.group, b.consumer, ...b.args);
    } catch (err) {
      sent = Promise.reject(err);
    }
    sent.then(
      () => {
        for (const w of b.waiters) w.resolve();
      },
      (err: unknown) => {
        const error = toBusError(err, b.op);
        for (const w of b.waiters) w.reject(error);
      },
    );
  }
}
