import type { Channel, Message } from 'amqplib';

/** Acks sent per event-loop turn before the batch goes out anyway. */
const MAX_QUEUED = 256;

/**
 * Coalesces the acks of one consumer channel: the acks of an event-loop turn go out as one
 * `basic.ack` with `multiple` for the run of delivery tags, from the lowest unsettled one, that
 * are all acked, plus single acks for the rest (those behind a delivery still in a handler), so
 * a slow handler never holds the others' acks back. Tags are per channel, consecutive from 1.
 */
export class Acker {
  /** Lowest delivery tag not known to be settled. */
  #low = 1;
  /** Acked by the consumer, not sent yet. */
  #queued: number[] = [];
  #toSend = new Set<number>();
  /** Above #low and already settled on the wire (single ack, or nack). */
  #settled = new Set<number>();
  #scheduled: NodeJS.Immediate | undefined;

  constructor(
    private readonly ch: Channel,
    private readonly alive: () => boolean,
  ) {}

  ack(tag: number): void {
    this.#queued.push(tag);
    if (this.#queued.length >= MAX_QUEUED) this.flush();
    else this.#scheduled ??= setImmediate(() => this.flush());
  }

  /** A tag settled on the wire some other way (nack): lets the multiple-ack run pass it. */
  settledElsewhere(tag: number): void {
    this.#settled.add(tag);
  }

  flush(): void {
    if (this.#scheduled) clearImmediate(this.#scheduled);
    this.#scheduled = undefined;
    const queued = this.#queued;
    this.#queued = [];
    if (!this.alive()) return; // gone with its channel: the broker redelivers them
    for (const t of queued) this.#toSend.add(t);
    let t = this.#low;
    let upTo = -1;
    for (;;) {
      if (this.#toSend.delete(t)) upTo = t;
      else if (!this.#settled.delete(t)) break;
      t++;
    }
    this.#low = t;
    try {
      if (upTo > 0) this.ch.ack(tagOnly(upTo), true);
      for (const single of this.#toSend) {
        this.ch.ack(tagOnly(single), false);
        this.#settled.add(single);
      }
    } catch {
      // the channel closed meanwhile: the broker redelivers what was not acked
    }
    this.#toSend.clear();
  }
}

/** What `Channel#ack` reads of a message: its delivery tag. */
function tagOnly(deliveryTag: number): Message {
  return { fields: { deliveryTag } } as unknown as Message;
}
