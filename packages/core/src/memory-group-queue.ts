import type { Clock } from './clock.js';
import { MAX_PRIORITY } from './envelope.js';
import { Fifo, MinHeap } from './fifo.js';
import type { LeaseOps } from './managed-delivery.js';
import type { PollingSubscription } from './polling-subscription.js';
import type { DeadLetterOptions, InboundMessage, NackOptions } from './transport.js';

/** The queues of one group of the in-memory transport, and the lease of one of its deliveries. */

export interface Entry {
  readonly message: InboundMessage;
  attempt: number;
  readyAtMs: number;
  leaseUntilMs: number;
  /** Current lease token; 0 while not leased. Settling with a stale token has no effect. */
  token: number;
  /** The error of the nack that made it ready again; cleared when claimed (a lease that runs out leaves none). */
  lastError?: string | undefined;
}

export interface LeaseItem {
  readonly entry: Entry;
  readonly token: number;
  readonly untilMs: number;
}

export class GroupQueue {
  readonly patterns = new Set<string>();
  readonly ready: Fifo<Entry>[] = Array.from({ length: MAX_PRIORITY + 1 }, () => new Fifo<Entry>());
  readonly delayed = new MinHeap<Entry>((e) => e.readyAtMs);
  /** Leases in order of expiry; stale items (settled or extended since) are skipped lazily. */
  readonly leases = new MinHeap<LeaseItem>((l) => l.untilMs);
  inflight = 0;
  readonly subscriptions = new Set<PollingSubscription>();
  constructor(
    readonly name: string,
    /** Lives as long as its one subscription (see TransportSubscribeOptions.ephemeral). */
    readonly ephemeral: boolean,
  ) {}

  enqueue(entry: Entry, front = false): void {
    const q = this.ready[entry.message.priority] as Fifo<Entry>;
    if (front) q.unshift(entry);
    else q.push(entry);
  }

  wake(): void {
    for (const s of this.subscriptions) s.wake();
  }

  /** Drops lease items of settled deliveries, which otherwise stay until their time comes. */
  compactLeases(): void {
    const live = [...this.leases].filter((l) => l.entry.token === l.token);
    this.leases.clear();
    for (const l of live) this.leases.push(l);
  }

  get backlog(): number {
    return this.ready.reduce((n, q) => n + q.size, 0) + this.delayed.size;
  }
}

/** What a lease needs of its transport: shared by all leases, so nothing is allocated per delivery for it. */
export interface LeaseEnv {
  readonly clock: Clock;
  bury(g: GroupQueue, e: Entry, reason: string, error: string | undefined): void;
}

/** The lease of one delivery of an entry; settling with a stale token has no effect. */
export class EntryLease implements LeaseOps {
  readonly token: number;
  constructor(
    private readonly env: LeaseEnv,
    private readonly g: GroupQueue,
    readonly e: Entry,
  ) {
    this.token = e.token;
  }

  #take(): boolean {
    const { e, g } = this;
    if (e.token !== this.token) return false;
    g.inflight--;
    e.token = 0;
    return true;
  }

  ack(): void {
    this.#take();
  }

  nack({ delayMs = 0, error }: NackOptions): void {
    if (!this.#take()) return;
    const { e, g } = this;
    e.lastError = error;
    if (delayMs > 0) {
      e.readyAtMs = this.env.clock.now() + delayMs;
      g.delayed.push(e);
    } else {
      g.enqueue(e);
      g.wake();
    }
  }

  deadLetter(reason: string, { error }: DeadLetterOptions): void {
    if (this.#take()) this.env.bury(this.g, this.e, reason, error);
  }

  extend(ms: number): void {
    const { e } = this;
    if (e.token === this.token) {
      e.leaseUntilMs = Math.max(e.leaseUntilMs, this.env.clock.now() + ms);
    }
  }
}
