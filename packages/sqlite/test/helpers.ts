import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ManagedDelivery, Subscription, TransportMessage } from '@agentbus/core';
import Database from 'better-sqlite3';

/** A fresh temporary directory and its cleanup. */
export function tempDir(): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'agentbus-sqlite-'));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Polls `cond` until it holds, failing after `timeoutMs`. */
export async function until(cond: () => boolean | Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** The next delivery of `sub`, failing after `timeoutMs`. */
export async function nextDelivery(sub: Subscription<ManagedDelivery>, timeoutMs = 5000): Promise<ManagedDelivery> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error('no delivery in time')), timeoutMs);
  });
  try {
    const r = await Promise.race([sub[Symbol.asyncIterator]().next(), timeout]);
    if (r.done) throw new Error('subscription ended');
    return r.value;
  } finally {
    clearTimeout(timer);
  }
}

/** A transport message with a JSON body `{ n }`. */
export function message(topic: string, n: number, extra: Partial<TransportMessage> = {}): TransportMessage {
  return {
    id: `m-${n}`,
    topic,
    body: Buffer.from(JSON.stringify({ n })),
    headers: { 'content-type': 'application/json' },
    priority: 4,
    ...extra,
  };
}

/** `n` of a body built by {@link message}. */
export function bodyN(d: ManagedDelivery): number {
  return (JSON.parse(Buffer.from(d.message.body).toString()) as { n: number }).n;
}

/** Runs one read-only query on the database file through a separate connection (like another process). */
export function query<T = number>(path: string, sql: string, ...params: unknown[]): T {
  const db = new Database(path, { readonly: true });
  try {
    return db
      .prepare(sql)
      .pluck()
      .get(...params) as T;
  } finally {
    db.close();
  }
}
