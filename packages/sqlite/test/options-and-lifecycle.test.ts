import { existsSync } from 'node:fs';
import { ClosedError, ConfigError, ConnectionError } from '@agentbus/core';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { SQLITE_TRANSPORT_DEFAULTS, type SqliteTransport, sqliteTransport } from '../src/index.js';
import { message, nextDelivery, tempDir } from './helpers.js';

function configErrorOf(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  throw new Error('no ConfigError thrown');
}

describe('SqliteTransport options', () => {
  it('has frozen defaults', () => {
    expect(SQLITE_TRANSPORT_DEFAULTS).toMatchObject({
      pollIntervalMs: 25,
      busyTimeoutMs: 5000,
      synchronous: 'normal',
      retention: { maxAgeMs: 0 },
    });
    expect(Object.isFrozen(SQLITE_TRANSPORT_DEFAULTS)).toBe(true);
    expect(Object.isFrozen(SQLITE_TRANSPORT_DEFAULTS.retention)).toBe(true);
  });

  it.each([
    [{}, 'path'],
    [{ path: '' }, 'path'],
    [{ path: 'x.db', pollIntervalMs: 0 }, 'pollIntervalMs'],
    [{ path: 'x.db', busyTimeoutMs: -1 }, 'busyTimeoutMs'],
    [{ path: 'x.db', synchronous: 'off' }, 'synchronous'],
    [{ path: 'x.db', retention: { maxAgeMs: -1 } }, 'retention.maxAgeMs'],
    [{ path: 'x.db', retention: { maxMessages: 1.5 } }, 'retention.maxMessages'],
    [{ path: 'x.db', retention: { maxAge: 10 } }, 'retention.maxAge'],
    [{ path: 'x.db', sweepIntervalMs: -5 }, 'sweepIntervalMs'],
    [{ path: 'x.db', clock: {} }, 'clock'],
    [{ path: 'x.db', pageSize: 3000 }, 'pageSize'],
    [{ path: 'x.db', pageSize: 131_072 }, 'pageSize'],
    [{ path: 'x.db', pollIntervalMS: 10 }, 'pollIntervalMS'],
  ])('rejects %j with a ConfigError naming %s', (options, field) => {
    const err = configErrorOf(() => sqliteTransport(options as never));
    expect(err.code).toBe('CONFIG');
    expect(err.path).toBe(field);
    expect(err.message).toContain(field);
  });
});

describe('SqliteTransport lifecycle', () => {
  let tmp: ReturnType<typeof tempDir>;
  let t: SqliteTransport;

  beforeEach(() => {
    tmp = tempDir();
    t = sqliteTransport({ path: `${tmp.dir}/sub/bus.db` });
  });
  afterEach(async () => {
    await t.close();
    tmp.cleanup();
  });

  it('opens lazily and rejects bad subscribe options with ConfigError', async () => {
    expect(existsSync(`${tmp.dir}/sub/bus.db`)).toBe(false);
    await expect(t.subscribe('jobs.*', { group: '', prefetch: 1, ackTimeoutMs: 1000 })).rejects.toMatchObject({
      code: 'CONFIG',
      path: 'subscribe.group',
    });
    await expect(t.subscribe('jobs.*', { group: 'g', prefetch: 0, ackTimeoutMs: 1000 })).rejects.toMatchObject({
      path: 'subscribe.prefetch',
    });
    await expect(t.subscribe('jobs.>.x', { group: 'g', prefetch: 1, ackTimeoutMs: 1000 })).rejects.toMatchObject({
      code: 'VALIDATION',
    });
    expect(existsSync(`${tmp.dir}/sub/bus.db`)).toBe(true);
  });

  it('reports health: deep round trip, backlog, inflight, dead letters, WAL size', async () => {
    const sub = await t.subscribe('jobs.*', { group: 'w', prefetch: 1, ackTimeoutMs: 30_000 });
    await t.publish([message('jobs.x', 1), message('jobs.x', 2), message('jobs.x', 3)]);
    await (await nextDelivery(sub)).deadLetter('unrecoverable');
    await nextDelivery(sub);

    const shallow = await t.health();
    expect(shallow.status).toBe('pass');
    expect(shallow.latencyMs).toBeUndefined();
    const deep = await t.health(true);
    expect(deep).toMatchObject({
      status: 'pass',
      transport: 'sqlite',
      details: { path: `${tmp.dir}/sub/bus.db`, backlog: 1, inflight: 1, delayed: 0, deadLetters: 1 },
    });
    expect(deep.latencyMs).toBeGreaterThanOrEqual(0);
    expect(deep.details?.walSizeBytes).toBeGreaterThan(0);
  });

  it('close is idempotent and later calls reject with ClosedError; health then fails', async () => {
    await t.subscribe('jobs.*', { group: 'w', prefetch: 1, ackTimeoutMs: 30_000 });
    await Promise.all([t.close(), t.close()]);
    await t.close();
    await expect(t.publish([message('jobs.x', 1)])).rejects.toBeInstanceOf(ClosedError);
    await expect(t.subscribe('jobs.*', { group: 'w', prefetch: 1, ackTimeoutMs: 1000 })).rejects.toBeInstanceOf(
      ClosedError,
    );
    await expect(t.deadLetters.list()).rejects.toBeInstanceOf(ClosedError);
    expect((await t.health(true)).status).toBe('fail');
  });

  it('surfaces a database that cannot be written as a retryable ConnectionError', async () => {
    await t.connect();
    // Another connection holds the write lock longer than the busy timeout allows.
    const locked = sqliteTransport({ path: `${tmp.dir}/sub/bus.db`, busyTimeoutMs: 50 });
    const blocker = new Database(`${tmp.dir}/sub/bus.db`);
    try {
      await locked.subscribe('jobs.*', { group: 'w', prefetch: 1, ackTimeoutMs: 1000 });
      blocker.prepare('BEGIN IMMEDIATE').run();
      const err = await locked.publish([message('jobs.x', 1)]).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ConnectionError);
      expect(err).toMatchObject({ code: 'CONNECTION', retryable: true, data: { sqliteCode: 'SQLITE_BUSY' } });
      expect((err as Error).cause).toBeDefined();
    } finally {
      blocker.prepare('ROLLBACK').run();
      blocker.close();
      await locked.close();
    }
  });

  it('a malformed message fails its own publish, not the others sharing its commit', async () => {
    const sub = await t.subscribe('jobs.*', { group: 'w', prefetch: 1, ackTimeoutMs: 30_000 });
    const results = await Promise.allSettled([
      t.publish([message('jobs.x', 1)]),
      t.publish([message('jobs.x', 2, { priority: Number.NaN })]),
      t.publish([message('jobs.*', 3)]),
    ]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'rejected']);
    expect(results.slice(1).map((r) => (r as PromiseRejectedResult).reason.code)).toEqual(['VALIDATION', 'VALIDATION']);
    const d = await nextDelivery(sub);
    expect(d.message.id).toBe('m-1');
  });

  it('creates new files with 16 KiB pages; an existing file keeps its page size and works', async () => {
    await t.connect();
    await t.close();
    const created = new Database(`${tmp.dir}/sub/bus.db`, { readonly: true });
    expect(created.pragma('page_size', { simple: true })).toBe(16_384);
    created.close();

    const path = `${tmp.dir}/old.db`;
    const old = new Database(path);
    old.pragma('journal_mode = WAL'); // fixes the page size at SQLite's 4096
    old.close();
    const reopened = sqliteTransport({ path, pageSize: 65_536 });
    await reopened.publish([message('jobs.x', 1)]);
    expect((await reopened.health(true)).status).toBe('pass');
    await reopened.close();
    const check = new Database(path, { readonly: true });
    expect(check.pragma('page_size', { simple: true })).toBe(4096);
    check.close();
  });

  it('refuses a database written by a newer schema version', async () => {
    const path = `${tmp.dir}/future.db`;
    const db = new Database(path);
    db.pragma('user_version = 99');
    db.close();
    const future = sqliteTransport({ path });
    await expect(future.connect()).rejects.toMatchObject({ code: 'CONFIG', path: 'path' });
    await future.close();
  });
});

describe('sqlite::memory:', () => {
  it('declares itself neither persistent nor shared between processes', async () => {
    const t = sqliteTransport({ path: ':memory:' });
    expect(t.capabilities.persistent).toBe(false);
    expect(t.capabilities.crossProcess).toBe(false);
    expect(sqliteTransport({ path: '/tmp/x.db' }).capabilities.persistent).toBe(true);
    await t.close();
  });
});
