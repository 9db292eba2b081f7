import {
  type DeadLetter,
  type DeadLetterFilter,
  type DeadLetterStore,
  MAX_PRIORITY,
  matchesDeadLetterFilter,
  REPLAY_COUNT_HEADER,
} from '@agentbus/core';
import type { JetStreamManager, StoredMsg } from '@nats-io/jetstream';
import type { MsgHdrs } from '@nats-io/transport-node';
import { H, type NatsNames } from './names.js';
import { userHeaders } from './nats-subscription.js';

/** What the store needs of its transport. */
export interface DeadLetterContext {
  readonly names: NatsNames;
  manager(): Promise<JetStreamManager>;
  /** Publishes a replay to the topic for one group (the others skip it); resolves on JetStream's ack. */
  replay(topic: string, body: Uint8Array, headers: Record<string, string>, msgId: string): Promise<void>;
}

const DEFAULT_LIMIT = 100;

function get(h: MsgHdrs | undefined, name: string): string | undefined {
  return h?.has(name) ? h.get(name) : undefined;
}

function num(h: MsgHdrs | undefined, name: string): number | undefined {
  const v = get(h, name);
  const n = v === undefined || v === '' ? Number.NaN : Number(v);
  return Number.isFinite(n) ? n : undefined;
}

/**
 * Dead letters are messages of the stream `AB_<ns>_DLQ` (limits retention), one subject per group
 * and topic; a record's id is its stream sequence. list and get read the stream (direct get,
 * next by subject); purge deletes messages; replay publishes to the original topic marked for the
 * group that dead-lettered it, then deletes the dead letter.
 */
export class NatsDeadLetterStore implements DeadLetterStore {
  constructor(private readonly ctx: DeadLetterContext) {}

  async list(filter: DeadLetterFilter = {}): Promise<DeadLetter[]> {
    const limit = filter.limit ?? DEFAULT_LIMIT;
    const out: DeadLetter[] = [];
    await this.#scan(filter.group, (rec) => {
      if (matchesDeadLetterFilter(rec, filter)) out.push(rec);
      return out.length < limit;
    });
    return out;
  }

  async get(id: string): Promise<DeadLetter | undefined> {
    const seq = Number(id);
    if (!Number.isSafeInteger(seq) || seq < 1) return undefined;
    const jsm = await this.ctx.manager();
    try {
      const m = await jsm.streams.getMessage(this.ctx.names.deadLetterStream, { seq });
      return m ? toRecord(this.ctx.names, m) : undefined;
    } catch {
      return undefined; // deleted or never there
    }
  }

  async replay(target: string | DeadLetterFilter): Promise<number> {
    return this.#take(target, async (rec) => {
      const headers: Record<string, string> = {
        ...rec.message.headers,
        [REPLAY_COUNT_HEADER]: String(Number(rec.message.headers[REPLAY_COUNT_HEADER] ?? '0') + 1),
      };
      const hdrs: Record<string, string> = {
        [H.id]: rec.message.id,
        [H.headers]: JSON.stringify(headers),
        [H.priority]: String(rec.message.priority),
        [H.onlyGroup]: rec.group,
        [H.publishedAt]: String(rec.message.publishedAtMs),
      };
      await this.ctx.replay(rec.message.topic, rec.message.body, hdrs, `${rec.message.id}~replay~${rec.id}`);
    });
  }

  async purge(target?: string | DeadLetterFilter): Promise<number> {
    return this.#take(target ?? {}, async () => {});
  }

  async #take(target: string | DeadLetterFilter, act: (rec: DeadLetter) => Promise<void>): Promise<number> {
    let recs: DeadLetter[];
    if (typeof target === 'string') {
      const rec = await this.get(target);
      recs = rec ? [rec] : [];
    } else {
      recs = await this.list({ ...target, limit: target.limit ?? Number.POSITIVE_INFINITY });
    }
    const jsm = await this.ctx.manager();
    let n = 0;
    for (const rec of recs) {
      await act(rec);
      if (await jsm.streams.deleteMessage(this.ctx.names.deadLetterStream, Number(rec.id), false).catch(() => false)) {
        n++;
      }
    }
    return n;
  }

  /** Visits the dead letters (of one group) in order while `visit` returns true. */
  async #scan(group: string | undefined, visit: (rec: DeadLetter) => boolean): Promise<void> {
    const jsm = await this.ctx.manager();
    const subject = this.ctx.names.deadLetterFilter(group);
    let seq = 1;
    for (;;) {
      let m: StoredMsg | null;
      try {
        m = await jsm.direct.getMessage(this.ctx.names.deadLetterStream, { seq, next_by_subj: subject });
      } catch {
        return; // no more (404), or no stream yet
      }
      if (!m) return;
      if (!visit(toRecord(this.ctx.names, m))) return;
      seq = m.seq + 1;
    }
  }
}

function toRecord(names: NatsNames, m: StoredMsg): DeadLetter {
  const h = m.header;
  const p = num(h, H.priority);
  return {
    id: String(m.seq),
    group: get(h, H.dlGroup) ?? '',
    reason: get(h, H.dlReason) ?? 'unknown',
    error: get(h, H.dlError) || undefined,
    attempts: num(h, H.dlAttempts) ?? 0,
    deadLetteredAtMs: num(h, H.dlAt) ?? m.time.getTime(),
    message: {
      id: get(h, H.id) ?? '',
      topic: get(h, H.topic) ?? names.topicOf(m.subject),
      body: m.data,
      headers: userHeaders(h),
      priority: p === undefined ? 4 : Math.max(0, Math.min(MAX_PRIORITY, p)),
      expiresAtMs: num(h, H.expiresAt),
      publishedAtMs: num(h, H.publishedAt) ?? 0,
    },
  };
}
