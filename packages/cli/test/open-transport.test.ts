import { ConfigError, MemoryTransport } from '@agentbus/core';
import { SqliteTransport } from '@agentbus/sqlite';
import { describe, expect, it } from 'vitest';
import { DEFAULT_TRANSPORT_URL, openTransport, parseTransportUrl } from '../src/index.js';

describe('openTransport', () => {
  it('opens the memory transport for memory:', async () => {
    const t = openTransport('memory:');
    expect(t).toBeInstanceOf(MemoryTransport);
    await t.close();
  });

  it('opens the sqlite transport for sqlite:PATH, including sqlite::memory:', async () => {
    const t = openTransport('sqlite::memory:');
    expect(t).toBeInstanceOf(SqliteTransport);
    await t.connect();
    expect((await t.health()).status).toBe('pass');
    await t.close();
    expect(parseTransportUrl('sqlite:/var/lib/bus.db')).toEqual({ scheme: 'sqlite', path: '/var/lib/bus.db' });
    expect(parseTransportUrl(DEFAULT_TRANSPORT_URL)).toEqual({ scheme: 'sqlite', path: './.agentbus/bus.db' });
  });

  it.each([
    ['redis://localhost:6379', /redis: transport \(@agentbus\/redis\) is not installed yet/],
    ['amqp://localhost', /amqp: transport \(@agentbus\/amqp\) is not installed yet/],
    ['nats://localhost:4222', /nats: transport \(@agentbus\/nats\) is not installed yet/],
    ['kafka://x', /unsupported transport URL 'kafka:\/\/x'; supported: memory:, sqlite:PATH/],
    ['sqlite:', /has no database path/],
    ['', /a transport URL is required/],
  ])('refuses %j with a ConfigError on path transport', (url, message) => {
    const err = (() => {
      try {
        openTransport(url);
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).code).toBe('CONFIG');
    expect((err as ConfigError).path).toBe('transport');
    expect((err as ConfigError).message).toMatch(message);
  });
});
