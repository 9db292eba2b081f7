import {
  type DeadLetter,
  type DeadLetterFilter,
  type DeadLetterStore,
  MAX_PRIORITY,
  matchesDeadLetterFilter,
  REPLAY_COUNT_HEADER,
  TimeoutError,
} from '@agentbus/core';
import type { Channel, GetMessage, Options } from 'amqplib';
import { copyOptions, H, numberHeader, stringHeader, userHeaders } from './headers.js';
import type { AmqpNames } from './names.js';

/** What the dead-letter store needs of its transport. */
export interface DeadLetterContext {
  readonly names: AmqpNames;
  createChannel(): Promise<Channel>;
  sendToQueue(queue: string, body: Buffer, options: Options.Publish): Promise<void>;
}

const DEFAULT_LIMIT = 100;
/** How long a browse waits for another browse of the same queue to finish before it gives up. */
const LOCK_WAIT_MS = 30_000;
/** AMQP reply code of a declare of an exclusive queue that another connection holds. */
const RESOURCE_LOCKED = 405;
/** Messages one browse of a dead-letter queue looks at, at most. */
const BROWSE_MAX = 100_000;

/** What to do with a browsed message. */
type Verdict = 'keep' | 'take';

/** A record id: `<group>/<dead-letter id>` (the dead-letter id is a UUID or a message id). */
function recordId(group: string, dlId: string): string {
  return `${group}/${dlId}`;
}

function parseRecordId(id: string): { group: string; dlId: string } | undefined {
  const slash = id.lastIndexOf('/');
  if (slash <= 0 || slash === id.length - 1) return undefined;
  return { group: id.slice(0, slash), dlId: id.slice(slash + 1) };
}

/** Reason of a message the broker dead-lettered itself (x-death), in the store's words. */
function brokerReason(h: Record<string, unknown> | undefined): string {
  const r = stringHeader(h, 'x-first-death-reason') ?? 'rejected';
  return r === 'delivery_limit' ? 'max-attempts' : r;
}

/**
 * Dead letters live in one durable queue per group (`<ns>.q.<group>.dlq`). AMQP cannot read a
 * queue without taking messages, so list and get browse it: `basic.get` without ack on a channel
 * of their own, then nack them back in place. Replay and purge ack what they take. The groups come
 * from the registry queue. A browse holds a lock on its queue, so two browses (in this process or
 * any other) never see each other's messages as taken: an exclusive queue on the broker, which
 * goes with the connection should the process die, and in this process a queue of waiters (one
 * connection owns the exclusive queue for all of them). An operator tool, not a hot path.
 */
export class AmqpDeadLetterStore implements DeadLetterStore {
  /** Per browsed queue, the end of this process's line of browses. */
  readonly #line = new Map<string, Promise<void>>();

  constructor(private readonly ctx: DeadLetterContext) {}

  async list(filter: DeadLetterFilter = {}): Promise<DeadLetter[]> {
    const limit = filter.limit ?? DEFAULT_LIMIT;
    const out: DeadLetter[] = [];
    for (const group of await this.#groups(filter.group)) {
      await this.#browse(group, (rec) => {
        if (out.length < limit && matchesDeadLetterFilter(rec, filter)) out.push(rec);
        return 'keep';
      });
      if (out.length >= limit) break;
    }
    return out.sort((a, b) => a.deadLetteredAtMs - b.deadLetteredAtMs);
  }

  async get(id: string): Promise<DeadLetter | undefined> {
    const parsed = parseRecordId(id);
    if (!parsed) return undefined;
    let found: DeadLetter | undefined;
    await this.#browse(parsed.group, (rec) => {
      if (rec.id === id) found = rec;
      return 'keep';
    });
    return found;
  }

  async replay(target: string | DeadLetterFilter): Promise<number> {
    return this.#take(target, async (rec, msg) => {
      const replays = Number(rec.message.headers[REPLAY_COUNT_HEADER] ?? '0') + 1;
      const props = copyOptions(msg.properties, {
        [H.attempts]: '0',
        [H.lastError]: undefined,
        [H.topic]: rec.message.topic,
        [REPLAY_COUNT_HEADER]: String(replays),
        [H.dlId]: undefined,
        [H.dlReason]: undefined,
        [H.dlError]: undefined,
        [H.dlAttempts]: undefined,
        [H.dlAt]: undefined,
        [H.dlGroup]: undefined,
      });
      // Back into the group's own queue: the other groups already had their copy.
      await this.ctx.sendToQueue(this.ctx.names.queue(rec.group), msg.content, props);
    });
  }

  async purge(target?: string | DeadLetterFilter): Promise<number> {
    return this.#take(target ?? {}, async () => {});
  }

  /** Takes (acks) each record `target` names, after `act` succeeded for it. */
  async #take(
    target: string | DeadLetterFilter,
    act: (rec: DeadLetter, msg: GetMessage) => Promise<void>,
  ): Promise<number> {
    let groups: string[];
    let pick: (rec: DeadLetter) => boolean;
    let limit = Number.POSITIVE_INFINITY;
    if (typeof target === 'string') {
      const parsed = parseRecordId(target);
      if (!parsed) return 0;
      groups = [parsed.group];
      pick = (rec) => rec.id === target;
      limit = 1;
    } else {
      groups = await this.#groups(target.group);
      pick = (rec) => matchesDeadLetterFilter(rec, target);
      if (target.limit !== undefined) limit = target.limit;
    }
    let n = 0;
    for (const group of groups) {
      if (n >= limit) break;
      await this.#browse(group, async (rec, msg) => {
        if (n >= limit || !pick(rec)) return 'keep';
        await act(rec, msg);
        n++;
        return 'take';
      });
    }
    return n;
  }

  /** The group named, or every group in the registry. */
  async #groups(group: string | undefined): Promise<string[]> {
    if (group !== undefined) return [group];
    const groups = new Set<string>();
    const registry = this.ctx.names.registry;
    await this.#locked(registry, async () => {
      const ch = await this.ctx.createChannel();
      ch.on('error', () => {});
      try {
        for (let i = 0; i < BROWSE_MAX; i++) {
          const msg = await ch.get(registry, { noAck: false });
          if (msg === false) break;
          groups.add(msg.content.toString('utf8'));
        }
      } catch {
        // no registry yet: no groups
      } finally {
        await giveBack(ch);
      }
    });
    return [...groups].sort();
  }

  /** Runs `fn` holding the browse lock of `queue`: first in this process's line, then on the broker. */
  async #locked(queue: string, fn: () => Promise<void>): Promise<void> {
    const before = this.#line.get(queue) ?? Promise.resolve();
    let done!: () => void;
    const gate = new Promise<void>((resolve) => {
      done = resolve;
    });
    const mine = before.then(() => gate);
    this.#line.set(queue, mine);
    await before;
    try {
      const lock = await this.#acquire(this.ctx.names.browseLock(queue));
      try {
        await fn();
      } finally {
        await lock.deleteQueue(this.ctx.names.browseLock(queue)).catch(() => {});
        await lock.close().catch(() => {});
      }
    } finally {
      done();
      if (this.#line.get(queue) === mine) this.#line.delete(queue);
    }
  }

  /** Declares the exclusive lock queue, waiting while another connection holds it; the channel holds it. */
  async #acquire(name: string): Promise<Channel> {
    const deadline = Date.now() + LOCK_WAIT_MS;
    for (let wait = 5; ; wait = Math.min(wait * 2, 200)) {
      const ch = await this.ctx.createChannel();
      ch.on('error', () => {});
      try {
        await ch.assertQueue(name, { exclusive: true, durable: false, autoDelete: false });
        return ch;
      } catch (err) {
        await ch.close().catch(() => {});
        if ((err as { code?: unknown }).code !== RESOURCE_LOCKED) throw err;
        if (Date.now() >= deadline) {
          throw new TimeoutError(`another browse of the dead letters held ${name} for ${LOCK_WAIT_MS} ms`);
        }
        await new Promise((resolve) => setTimeout(resolve, wait));
      }
    }
  }

  /**
   * Visits the dead letters of one group in queue order; a visit that returns 'take' acks the
   * message, the rest go back when the browsing channel closes.
   */
  async #browse(group: string, visit: (rec: DeadLetter, msg: GetMessage) => Verdict | Promise<Verdict>): Promise<void> {
    const queue = this.ctx.names.deadLetterQueue(group);
    await this.#locked(queue, async () => {
      const ch = await this.ctx.createChannel();
      ch.on('error', () => {});
      try {
        try {
          await ch.checkQueue(queue);
        } catch {
          return; // no such queue (the channel is closed by the broker): nothing there
        }
        for (let i = 0; i < BROWSE_MAX; i++) {
          const msg = await ch.get(queue, { noAck: false });
          if (msg === false) break;
          if ((await visit(toRecord(group, msg), msg)) === 'take') ch.ack(msg);
        }
      } finally {
        await giveBack(ch);
      }
    });
  }
}

/**
 * Closes a browsing channel after giving back what it took and did not ack. A close alone is not
 * enough: the broker requeues a closed channel's messages when the queue learns that the channel
 * is gone, which can come after the next browse's first `basic.get` (a list then misses them). An
 * explicit nack is handled by the channel before its close, so it reaches the queue first.
 */
async function giveBack(ch: Channel): Promise<void> {
  try {
    ch.nackAll(true);
  } catch {
    // the channel is closed already (the broker closed it): the broker has them back
  }
  await ch.close().catch(() => {});
}

/** A dead letter from a message of the group's dead-letter queue (ours, or dead-lettered by the broker). */
function toRecord(group: string, msg: GetMessage): DeadLetter {
  const h = msg.properties.headers as Record<string, unknown> | undefined;
  const messageId = typeof msg.properties.messageId === 'string' ? msg.properties.messageId : '';
  const ours = stringHeader(h, H.dlId);
  const rawPriority = msg.properties.priority;
  return {
    id: recordId(group, ours ?? (messageId || `tag-${msg.fields.deliveryTag}`)),
    group,
    reason: ours ? (stringHeader(h, H.dlReason) ?? 'unknown') : brokerReason(h),
    // One the broker dead-lettered itself (delivery limit) has no record error of ours: the error
    // of the nack that made the copy it last delivered is the best there is.
    error: stringHeader(h, H.dlError) || stringHeader(h, H.lastError) || undefined,
    attempts: numberHeader(h, H.dlAttempts) ?? numberHeader(h, H.attempts) ?? 0,
    deadLetteredAtMs: numberHeader(h, H.dlAt) ?? numberHeader(h, H.publishedAt) ?? 0,
    message: {
      id: messageId,
      topic: stringHeader(h, H.topic) ?? msg.fields.routingKey,
      body: msg.content,
      headers: userHeaders(h),
      priority: typeof rawPriority === 'number' ? Math.max(0, Math.min(MAX_PRIORITY, rawPriority)) : 4,
      expiresAtMs: numberHeader(h, H.expiresAt),
      publishedAtMs: numberHeader(h, H.publishedAt) ?? 0,
    },
  };
}
