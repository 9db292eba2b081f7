import { ConfigError } from '@agentbus/core';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type SqliteTransport, type SqliteTransportOptions, sqliteTransport } from '../src/index.js';
import { message, nextDelivery, query, tempDir } from './helpers.js';

describe('SqliteTransport ephemeral groups', () => {
  let tmp: ReturnType<typeof tempDir>;
  let path: string;
  const open: SqliteTransport[] = [];
  const transport = (options: Omit<SqliteTransportOptions, 'path'> = {}) => {
    const t = sqliteTransport({ path, ...options });
    open.push(t);
    return t;
  };
  const sub = { prefetch: 1, ackTimeoutMs: 30_000 };

  beforeEach(() => {
    tmp = tempDir();
    path = `${tmp.dir}/bus.db`;
  });
  afterEach(async () => {
    await Promise.all(open.splice(0).map((t) => t.close()));
    tmp.cleanup();
  });

  it('opens a file made before groups.ephemeral_until existed, adds the column and keeps its groups durable', async () => {
    const first = transport();
    await (await first.subscribe('jobs.>', { group: 'w', ...sub })).close();
    await first.close();
    const db = new Database(path);
    db.exec('ALTER TABLE groups DROP COLUMN ephemeral_until');
    db.close();

    const second = transport();
    await second.publish([message('jobs.a', 1)]);
    expect(query<number>(path, "SELECT count(*) FROM pragma_table_info('groups') WHERE name = 'ephemeral_until'")).toBe(
      1,
    );
    expect(await second.routeCount('jobs.a')).toBe(1);
    const s = await second.subscribe('jobs.>', { group: 'w', ...sub });
    await (await nextDelivery(s)).ack();
    await expect(second.subscribe('jobs.>', { group: 'w', ...sub, ephemeral: true })).rejects.toBeInstanceOf(
      ConfigError,
    );
  });

  it('a group is durable or ephemeral, and an ephemeral group has one subscriber at a time', async () => {
    const a = transport();
    const b = transport();
    await (await a.subscribe('jobs.>', { group: 'durable', ...sub })).close();
    await expect(b.subscribe('jobs.>', { group: 'durable', ...sub, ephemeral: true })).rejects.toBeInstanceOf(
      ConfigError,
    );
    const inbox = await a.subscribe('_inbox.a', { group: 'inbox', ...sub, ephemeral: true });
    await expect(b.subscribe('_inbox.a', { group: 'inbox', ...sub, ephemeral: true })).rejects.toBeInstanceOf(
      ConfigError,
    );
    await expect(b.subscribe('_inbox.a', { group: 'inbox', ...sub })).rejects.toBeInstanceOf(ConfigError);
    await inbox.close();
    // Gone with its subscription: the name is free again, for either kind.
    await (await b.subscribe('_inbox.a', { group: 'inbox', ...sub })).close();
  });

  it('an ephemeral group that is no longer renewed stops counting at its deadline and is swept by another process', async () => {
    let offset = 0;
    const clock = { now: () => Date.now() + offset };
    const owner = transport({ clock, ephemeralTtlMs: 60_000, sweepIntervalMs: 0 });
    const other = transport({ clock, sweepIntervalMs: 0 });
    const inbox = await owner.subscribe('_inbox.b', { group: 'inbox-b', ...sub, ephemeral: true });
    await other.publish([message('_inbox.b', 1)]);
    expect(await other.routeCount('_inbox.b')).toBe(1);
    expect(await other.groupStats('inbox-b')).toEqual({ backlog: 1, inFlight: 0 });
    // The owner stalls (or died): no renewal for longer than its ephemeralTtlMs.
    offset = 61_000;
    expect(await other.routeCount('_inbox.b')).toBe(0);
    await other.sweep();
    expect(await other.groupStats('inbox-b')).toEqual({ backlog: 0, inFlight: 0 });
    expect(query<number>(path, "SELECT count(*) FROM groups WHERE group_name = 'inbox-b'")).toBe(0);
    expect(query<number>(path, "SELECT count(*) FROM deliveries WHERE group_name = 'inbox-b'")).toBe(0);
    await inbox.close();
  });
});
