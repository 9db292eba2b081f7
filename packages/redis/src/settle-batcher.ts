import type { Client } from './connection.js';
import { toBusError } from './redis-errors.js';

type BatchedOp = 'ack' | 'extend';

interface Batch {
  readonly op: BatchedOp;
  readonly key: string;
  readonly group: string;
  /** `consumer id count` per lease. */
  readonly leases: string[];
  readonly done: Promise<void>;
  readonly resolve: () => void;
  readonly reject: (err: unknown) => void;
}

/** Leases settled per script call at most (each is an id and a delivery count). */
const MAX_PER_CALL = 500;

/**
 * Collects the acks and lease renewals of one event-loop turn and sends one script call per
 * stream and group for them (all consumers of this process together, in one pipelined write),
 * instead of a round of script calls per message. A claim flushes it first, so its settles and
 * the claim share one write.
 */
export class SettleBatcher {
  readonly #client: () => Client;
  #batches = new Map<string, Batch>();
  #scheduled: NodeJS.Immediate | undefined;
  readonly #inFlight = new Set<Promise<number>>();

  constructor(client: () => Client) {
    this.#client = client;
  }

  /** Queues a settle; the promise is the batch's: it settles when the batch's call is answered. */
  add(op: BatchedOp, key: string, group: string, consumer: string, id: string, count: number): Promise<void> {
    const slot = `${op}\n${key}\n${group}`;
    let batch = this.#batches.get(slot);
    if (!batch || batch.leases.length >= MAX_PER_CALL) {
      if (batch) this.#send(batch);
      let resolve!: () => void;
      let reject!: (err: unknown) => void;
      const done = new Promise<void>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      done.catch(() => {}); // observed by each caller; none may be listening yet
      batch = { op, key, group, leases: [], done, resolve, reject };
      this.#batches.set(slot, batch);
    }
    batch.leases.push(`${consumer} ${id} ${count}`);
    this.#scheduled ??= setImmediate(() => this.send());
    return batch.done;
  }

  /** Sends everything collected so far (a claim calls this so its settles share its write). */
  send(): void {
    if (this.#scheduled) clearImmediate(this.#scheduled);
    this.#scheduled = undefined;
    const batches = this.#batches;
    this.#batches = new Map();
    for (const b of batches.values()) this.#send(b);
  }

  /** Sends everything collected so far; resolves once every call sent has been answered (close). */
  flush(): Promise<void> {
    this.send();
    return Promise.allSettled(this.#inFlight).then(() => {});
  }

  #send(b: Batch): Promise<number> {
    let sent: Promise<number>;
    try {
      const client = this.#client();
      const leases = b.leases.join(' ');
      sent =
        b.op === 'ack'
          ? client.agentbusAck(1, b.key, b.group, leases)
          : client.agentbusExtend(1, b.key, b.group, leases);
    } catch (err) {
      sent = Promise.reject(err);
    }
    this.#inFlight.add(sent);
    sent.finally(() => this.#inFlight.delete(sent)).catch(() => {});
    sent.then(b.resolve, (err: unknown) => b.reject(toBusError(err, b.op)));
    return sent;
  }
}
