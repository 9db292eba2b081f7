import type { Bus, BusSubscription, Delivery } from '@agentbus/core';
import type { ClientSubscriptionInfo } from '../context.js';
import { type ServerFrame, WS_LIMITS } from './ws-protocol.js';

/** What a subscription needs of its connection. */
export interface DeliveryLink {
  /**
   * Resolves true once the client's send buffer is below its limit (backpressure: deliveries wait
   * here), false when the connection is gone.
   */
  ready(): boolean | Promise<boolean>;
  send(frame: ServerFrame): void;
}

/** A delivery sent to the client and not yet settled by it. */
export interface PendingDelivery {
  readonly delivery: Delivery;
  readonly sub: WsSubscription;
  /** Lets the bus handler return (after the client settled the delivery, or it was released). */
  readonly done: () => void;
}

/** What a client asked for in `subscribe`, resolved by the connection. */
export interface WsSubscriptionSpec {
  readonly id: string;
  readonly pattern: string;
  readonly group: string;
  /** Durable or shared group (kept after the client leaves); false: an ephemeral group. */
  readonly durable: boolean;
  readonly prefetch: number;
  /** Called once the subscription has closed (the gateway forgets an ephemeral group's activity). */
  readonly onClosed?: () => void;
}

/** The error a released delivery is nacked with, so that its next attempt says why. */
const RELEASED = 'websocket client went away before settling';

/**
 * One `subscribe` of a WebSocket client: a bus subscription whose handler sends each delivery to
 * the client as a `message` frame and returns only when the client settles it (`ack`, `nack`,
 * `deadLetter`, `reply`). Flow control comes from the bus: `concurrency = prefetch`, so at most
 * `prefetch` deliveries are unsettled at once. Closing releases the unsettled ones (nack) so that
 * they are redelivered to this group's next consumer.
 */
export class WsSubscription {
  readonly id: string;
  readonly pattern: string;
  readonly group: string;
  readonly durable: boolean;
  readonly #link: DeliveryLink;
  readonly #onClosed: (() => void) | undefined;
  readonly #pending = new Map<string, PendingDelivery>();
  #bus: BusSubscription | undefined;
  #seq = 0;
  #closed = false;
  #closing: Promise<void> | undefined;
  #started!: () => void;
  readonly #startedP = new Promise<void>((r) => {
    this.#started = r;
  });

  private constructor(spec: WsSubscriptionSpec, link: DeliveryLink) {
    this.id = spec.id;
    this.pattern = spec.pattern;
    this.group = spec.group;
    this.durable = spec.durable;
    this.#link = link;
    this.#onClosed = spec.onClosed;
  }

  /** Subscribes on the bus; deliveries wait for {@link start} (the `subscribed` frame goes first). */
  static async open(bus: Bus, spec: WsSubscriptionSpec, link: DeliveryLink): Promise<WsSubscription> {
    const sub = new WsSubscription(spec, link);
    sub.#bus = await bus.subscribe(spec.pattern, (d) => sub.#handle(d), {
      group: spec.group,
      concurrency: spec.prefetch,
      prefetch: spec.prefetch,
      ...(spec.durable ? {} : { ephemeral: true }),
    });
    return sub;
  }

  /** Lets deliveries flow to the client. */
  start(): void {
    this.#started();
  }

  get info(): ClientSubscriptionInfo {
    return { id: this.id, pattern: this.pattern, group: this.group, durable: this.durable };
  }

  /** Deliveries sent and not yet settled. */
  get unsettled(): number {
    return this.#pending.size;
  }

  async #handle(d: Delivery): Promise<void> {
    await this.#startedP;
    // The send buffer is checked again, synchronously, right before the send: handlers woken
    // together must not all pass one check and then all send (prefetch × size at once).
    let ready = this.#closed ? false : this.#link.ready();
    while (ready !== true) {
      if (ready === false || !(await ready) || this.#closed) {
        await d.nack({ delayMs: WS_LIMITS.releaseDelayMs, error: RELEASED });
        return;
      }
      ready = this.#link.ready();
    }
    const id = `${this.id}:${++this.#seq}`;
    const settled = new Promise<void>((done) => this.#pending.set(id, { delivery: d, sub: this, done }));
    try {
      this.#link.send({ op: 'message', sub: this.id, delivery: id, attempt: d.attempt, envelope: d.envelope });
    } catch (err) {
      // Not representable as JSON (e.g. a BigInt from a MessagePack codec): the bus dead-letters it.
      this.#pending.delete(id);
      throw err;
    }
    await settled;
  }

  /** The unsettled delivery `id`, removed from the pending set (the caller settles it and calls `done`). */
  take(id: string): PendingDelivery | undefined {
    const p = this.#pending.get(id);
    if (p) this.#pending.delete(id);
    return p;
  }

  /** The unsettled delivery `id`, left pending. */
  peek(id: string): PendingDelivery | undefined {
    return this.#pending.get(id);
  }

  /**
   * Stops the subscription: unsettled deliveries are nacked (after `releaseDelayMs`) so they come back, then the
   * bus subscription closes (an ephemeral group is removed; a durable one keeps what arrives).
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#closed = true;
      this.#started();
      // Stop pulling first (close sets the bus subscription stopping at once), then give back
      // what the client holds: released before that, they would come straight back to us.
      const closed = this.#bus?.close();
      const released = [...this.#pending.values()];
      this.#pending.clear();
      await Promise.all(
        released.map(async (p) => {
          try {
            await p.delivery.nack({ delayMs: WS_LIMITS.releaseDelayMs, error: RELEASED });
          } finally {
            p.done();
          }
        }),
      ).catch(() => {}); // a failed nack comes back after its lease anyway
      try {
        await closed;
      } finally {
        this.#onClosed?.();
      }
    })();
    return this.#closing;
  }
}
