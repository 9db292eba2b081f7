import {
  type DeadLetter,
  type DeadLetterFilter,
  type DeadLetterStore,
  REPLAY_COUNT_HEADER,
  topicMatches,
} from '@agentbus/core';
import type { Client } from './connection.js';
import type { RedisKeys } from './keys.js';
import { toBusError } from './redis-errors.js';

const DEFAULT_LIMIT = 100;

/** A dead letter and where it is stored. */
interface Located {
  readonly record: DeadLetter;
  readonly key: string;
  readonly entryId: string;
  readonly topic: string;
}

/**
 * A dead-letter record id names its stream entry: `<entry id>~<topic>~<group>` (topics cannot
 * contain `~`; a group may, so it comes last).
 */
function encodeId(entryId: string, topic: string, group: string): string {
  return `${entryId}~${topic}~${group}`;
}

function decodeId(id: string): { entryId: string; topic: string; group: string } | undefined {
  const a = id.indexOf('~');
  const b = a < 0 ? -1 : id.indexOf('~', a + 1);
  if (a <= 0 || b < 0) return undefined;
  return { entryId: id.slice(0, a), topic: id.slice(a + 1, b), group: id.slice(b + 1) };
}

function fieldsOf(raw: Buffer[]): Map<string, Buffer> {
  const m = new Map<string, Buffer>();
  for (let k = 0; k + 1 < raw.length; k += 2) m.set((raw[k] as Buffer).toString('latin1'), raw[k + 1] as Buffer);
  return m;
}

function num(b: Buffer | undefined): number {
  return b === undefined || b.length === 0 ? Number.NaN : Number(b.toString('latin1'));
}

/**
 * Dead letters live in one stream per (topic, group), in the topic's hash slot, so moving a
 * message there is atomic with its ack; a registry set lists those streams.
 */
export class RedisDeadLetterStore implements DeadLetterStore {
  constructor(
    private readonly client: () => Promise<Client>,
    private readonly keys: RedisKeys,
  ) {}

  async list(filter: DeadLetterFilter = {}): Promise<DeadLetter[]> {
    const all = await this.#matching(filter);
    return all.slice(0, filter.limit ?? DEFAULT_LIMIT).map((l) => l.record);
  }

  async get(id: string): Promise<DeadLetter | undefined> {
    return (await this.#byId(id))?.record;
  }

  async replay(target: string | DeadLetterFilter): Promise<number> {
    const chosen = await this.#select(target);
    const c = await this.client();
    let replayed = 0;
    try {
      for (const l of chosen) {
        const { message, group, reason } = l.record;
        const replays = Number(message.headers[REPLAY_COUNT_HEADER] ?? '0') + 1;
        const headers = { ...message.headers, [REPLAY_COUNT_HEADER]: String(replays) };
        // An expired message would only expire again: it comes back without its expiry.
        const expiry = reason === 'expired' || message.expiresAtMs === undefined ? '' : String(message.expiresAtMs);
        replayed += await c.agentbusReplay(
          2,
          l.key,
          this.keys.retry(l.topic, group),
          l.entryId,
          group,
          JSON.stringify(headers),
          expiry,
        );
      }
    } catch (err) {
      throw toBusError(err, 'dead-letter replay');
    }
    return replayed;
  }

  async purge(target?: string | DeadLetterFilter): Promise<number> {
    const chosen = await this.#select(target ?? { limit: Number.POSITIVE_INFINITY });
    const c = await this.client();
    let purged = 0;
    try {
      for (const l of chosen) purged += await c.xdel(l.key, l.entryId);
    } catch (err) {
      throw toBusError(err, 'dead-letter purge');
    }
    return purged;
  }

  async #select(target: string | DeadLetterFilter): Promise<Located[]> {
    if (typeof target === 'string') {
      const one = await this.#byId(target);
      return one ? [one] : [];
    }
    const all = await this.#matching(target);
    return target.limit === undefined ? all : all.slice(0, target.limit);
  }

  async #byId(id: string): Promise<Located | undefined> {
    const at = decodeId(id);
    if (!at) return undefined;
    const key = this.keys.deadLetter(at.topic, at.group);
    try {
      const c = await this.client();
      const rows = (await c.xrangeBuffer(key, at.entryId, at.entryId)) as [Buffer, Buffer[]][];
      const row = rows[0];
      return row ? this.#locate(key, at.topic, at.group, row) : undefined;
    } catch (err) {
      throw toBusError(err, 'dead-letter get');
    }
  }

  /** Every record matching `filter`, oldest first. */
  async #matching(filter: DeadLetterFilter): Promise<Located[]> {
    const out: Located[] = [];
    try {
      const c = await this.client();
      for (const key of await c.smembers(this.keys.deadLetters)) {
        const at = this.keys.parseDeadLetter(key);
        if (!at) continue;
        if (filter.group !== undefined && at.group !== filter.group) continue;
        if (filter.topic !== undefined && !topicMatches(filter.topic, at.topic)) continue;
        const rows = (await c.xrangeBuffer(key, '-', '+')) as [Buffer, Buffer[]][];
        for (const row of rows) {
          const l = this.#locate(key, at.topic, at.group, row);
          const r = l.record;
          if (filter.reason !== undefined && r.reason !== filter.reason) continue;
          if (filter.sinceMs !== undefined && r.deadLetteredAtMs < filter.sinceMs) continue;
          if (filter.untilMs !== undefined && r.deadLetteredAtMs >= filter.untilMs) continue;
          out.push(l);
        }
      }
    } catch (err) {
      throw toBusError(err, 'dead-letter list');
    }
    return out.sort(
      (a, b) => a.record.deadLetteredAtMs - b.record.deadLetteredAtMs || a.entryId.localeCompare(b.entryId),
    );
  }

  #locate(key: string, topic: string, group: string, [idBuf, raw]: [Buffer, Buffer[]]): Located {
    const entryId = idBuf.toString('latin1');
    const f = fieldsOf(raw);
    let headers: Record<string, string> = {};
    try {
      headers = JSON.parse(f.get('h')?.toString('utf8') ?? '{}') as Record<string, string>;
    } catch {
      // A foreign or damaged entry: keep the record listable.
    }
    const expires = num(f.get('x'));
    const error = f.get('e')?.toString('utf8');
    const record: DeadLetter = {
      id: encodeId(entryId, topic, group),
      group,
      reason: f.get('r')?.toString('utf8') ?? 'unknown',
      error: error === undefined || error === '' ? undefined : error,
      attempts: num(f.get('n')) || 0,
      deadLetteredAtMs: num(f.get('w')) || Number(entryId.slice(0, entryId.indexOf('-'))),
      message: {
        id: f.get('i')?.toString('utf8') ?? '',
        topic: f.get('o')?.toString('utf8') ?? topic,
        body: f.get('b') ?? Buffer.alloc(0),
        headers,
        priority: num(f.get('p')) || 0,
        expiresAtMs: Number.isNaN(expires) ? undefined : expires,
        publishedAtMs: num(f.get('t')) || 0,
      },
    };
    return { record, key, entryId, topic };
  }
}
