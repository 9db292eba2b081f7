import type { BusSubscription, SubscribeOptions } from './bus.js';
import type { Delivery } from './delivery.js';
import type { Envelope, PublishOptions } from './envelope.js';
import {
  BusError,
  ClosedError,
  errorFromWire,
  HandlerError,
  NoRespondersError,
  TimeoutError,
  ValidationError,
  type WireError,
} from './errors.js';
import { positiveInteger } from './validate.js';

/** What request-reply needs of the bus (the Bus implements it). */
export interface RequestReplyHost {
  readonly ids: () => string;
  readonly transport: { routeCount?(topic: string): Promise<number> };
  publish<T>(topic: string, data: T, options?: PublishOptions): Promise<Envelope<T>>;
  subscribe<T>(
    pattern: string,
    handler: (d: Delivery<T>) => unknown,
    options?: SubscribeOptions,
  ): Promise<BusSubscription>;
}

export interface RequestOptions extends Omit<PublishOptions, 'replyto' | 'correlationid'> {
  /** How long to wait for the reply (default 30 s); the request also expires then. */
  readonly timeoutMs?: number;
  /** Aborting it stops waiting: the promise rejects with the signal's reason. */
  readonly signal?: AbortSignal;
}

export interface ReplyOptions extends Omit<SubscribeOptions, 'maxAttempts'> {}

/** The envelope `type` of a reply that carries an error (its data is a WireError). */
export const REPLY_ERROR_TYPE = 'agentbus.reply.error';
/** The envelope `type` of a successful reply. */
export const REPLY_TYPE = 'agentbus.reply';

export const REQUEST_DEFAULTS = Object.freeze({ timeoutMs: 30_000 });

/** How long a topic found routed is taken as still routed without asking the transport. */
const ROUTED_FOR_MS = 1_000;

interface Pending {
  resolve(value: unknown): void;
  reject(err: unknown): void;
}

/**
 * Request-reply over any transport: each requester has a private reply inbox (an ephemeral
 * group, `_inbox.<id>`), a request carries `replyto` and `correlationid`, a replier publishes its
 * result — or its error as a WireError, rebuilt on the requester's side as the same class — to
 * `replyto`. Replies that come after their request gave up are dropped and counted.
 */
export class RequestReply {
  readonly #host: RequestReplyHost;
  readonly #pending = new Map<string, Pending>();
  #inbox: Promise<{ topic: string; sub: BusSubscription }> | undefined;
  #late = 0;
  /** Topics found routed, until when (epoch ms). */
  readonly #routed = new Map<string, number>();
  #closed = false;

  constructor(host: RequestReplyHost) {
    this.#host = host;
  }

  /** Replies that arrived after their request timed out or was cancelled. */
  get lateReplies(): number {
    return this.#late;
  }

  /** Requests waiting for their reply. */
  get pending(): number {
    return this.#pending.size;
  }

  #ensureInbox(): Promise<{ topic: string; sub: BusSubscription }> {
    this.#inbox ??= (async () => {
      const topic = `_inbox.${this.#host.ids().replaceAll('.', '-')}`;
      const sub = await this.#host.subscribe(topic, (d) => this.#onReply(d), {
        group: topic,
        ephemeral: true,
        concurrency: 64,
        prefetch: 256,
        maxAttempts: 1,
      });
      return { topic, sub };
    })();
    this.#inbox.catch(() => {
      this.#inbox = undefined; // try again on the next request
    });
    return this.#inbox;
  }

  #onReply(d: Delivery): void {
    const id = d.envelope.correlationid;
    const p = id === undefined ? undefined : this.#pending.get(id);
    if (!p || id === undefined) {
      this.#late++;
      return;
    }
    this.#pending.delete(id);
    if (d.envelope.type === REPLY_ERROR_TYPE) p.reject(errorFromWire(d.envelope.data as WireError));
    else p.resolve(d.envelope.data);
  }

  /**
   * NoRespondersError where the transport can tell nobody subscribes. A topic found routed is
   * not asked again for ROUTED_FOR_MS: asking is a round trip (on NATS a consumer listing) that
   * would otherwise precede every request; a responder gone meanwhile shows as a timeout.
   */
  async #assertResponders(topic: string): Promise<void> {
    const transport = this.#host.transport;
    if (typeof transport.routeCount !== 'function') return;
    const now = Date.now();
    if ((this.#routed.get(topic) ?? 0) > now) return;
    if ((await transport.routeCount(topic)) === 0) {
      this.#routed.delete(topic);
      throw new NoRespondersError(`no subscriber for ${topic}`, { data: { topic } });
    }
    if (this.#routed.size >= 1_000) this.#routed.clear();
    this.#routed.set(topic, now + ROUTED_FOR_MS);
  }

  async request<R = unknown, T = unknown>(topic: string, data: T, options: RequestOptions = {}): Promise<R> {
    if (this.#closed) throw new ClosedError('bus is closed');
    const timeoutMs = positiveInteger(options.timeoutMs ?? REQUEST_DEFAULTS.timeoutMs, 'request.timeoutMs');
    const { signal } = options;
    signal?.throwIfAborted();
    const inbox = await this.#ensureInbox();
    await this.#assertResponders(topic);
    const id = options.id ?? this.#host.ids();
    // The id is the reply's correlation id: a second request under an id in flight would take its reply.
    if (this.#pending.has(id))
      throw new ValidationError('request.id: a request with this id is already waiting for its reply', {
        data: { path: 'id' },
      });
    const { timeoutMs: _t, signal: _s, ...publish } = options;
    return new Promise<R>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const done = () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        this.#pending.delete(id);
      };
      const onAbort = () => {
        done();
        reject(signal?.reason);
      };
      this.#pending.set(id, {
        resolve: (v) => {
          done();
          resolve(v as R);
        },
        reject: (e) => {
          done();
          reject(e);
        },
      });
      timer = setTimeout(() => {
        done();
        reject(new TimeoutError(`no reply to ${topic} within ${timeoutMs} ms`, { data: { topic, timeoutMs } }));
      }, timeoutMs);
      signal?.addEventListener('abort', onAbort, { once: true });
      if (signal?.aborted) {
        onAbort(); // aborted while the inbox was being set up
        return;
      }
      this.#host
        .publish(topic, data, { ...publish, id, replyto: inbox.topic, correlationid: id, ttlMs: timeoutMs })
        .catch((err: unknown) => {
          done();
          reject(err);
        });
    });
  }

  /**
   * Answers requests on `pattern`: the handler's result is the reply; a thrown error travels back
   * and is rebuilt as the same class. Each request is handled once (no retries: the requester
   * decides); a reply that cannot be published is retried like any failed delivery.
   */
  reply<T = unknown, R = unknown>(
    pattern: string,
    handler: (d: Delivery<T>) => R | Promise<R>,
    options: ReplyOptions = {},
  ): Promise<BusSubscription> {
    if (this.#closed) throw new ClosedError('bus is closed');
    return this.#host.subscribe<T>(
      pattern,
      async (d) => {
        const { replyto, id } = d.envelope;
        let result: unknown;
        let type = REPLY_TYPE;
        try {
          result = await handler(d);
        } catch (err) {
          if (replyto === undefined) throw err; // a plain event: handled like any delivery
          type = REPLY_ERROR_TYPE;
          result = (err instanceof BusError ? err : new HandlerError(String((err as Error)?.message ?? err))).toWire();
        }
        if (replyto === undefined) return; // a plain event: nobody waits
        await this.#host.publish(replyto, result, {
          correlationid: d.envelope.correlationid ?? id,
          causationid: id,
          type,
        });
      },
      { ...options, maxAttempts: 3 },
    );
  }

  /** Rejects every waiting request and closes the inbox. */
  async close(): Promise<void> {
    this.#closed = true;
    for (const p of [...this.#pending.values()]) p.reject(new ClosedError('bus is closed'));
    const inbox = await this.#inbox?.catch(() => undefined);
    await inbox?.sub.close();
  }
}
