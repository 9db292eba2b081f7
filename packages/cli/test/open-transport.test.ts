import { AmqpTransport } from '@agentbus/amqp';
import { ConfigError, MemoryTransport } from '@agentbus/core';
import { NatsTransport } from '@agentbus/nats';
import { RedisTransport } from '@agentbus/redis';
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

  it('opens redis:// and rediss:// URLs as the Redis Streams transport, without connecting', async () => {
    expect(parseTransportUrl('redis://127.0.0.1:6379/2')).toEqual({ scheme: 'redis', url: 'redis://127.0.0.1:6379/2' });
    expect(parseTransportUrl('rediss://cache.example:6380')).toEqual({
      scheme: 'redis',
      url: 'rediss://cache.example:6380',
    });
    const t = openTransport('redis://127.0.0.1:1', { redis: { keyPrefix: 'never-used' } });
    expect(t).toBeInstanceOf(RedisTransport);
    expect(t.name).toBe('redis');
    await t.close();
  });

  it('opens amqp:// and amqps:// URLs as the RabbitMQ transport, without connecting', async () => {
    expect(parseTransportUrl('amqp://guest:guest@127.0.0.1:5672')).toEqual({
      scheme: 'amqp',
      url: 'amqp://guest:guest@127.0.0.1:5672',
    });
    expect(parseTransportUrl('amqps://user:pw@broker.example:5671/prod')).toEqual({
      scheme: 'amqp',
      url: 'amqps://user:pw@broker.example:5671/prod',
    });
    for (const url of ['amqp://guest:guest@127.0.0.1:1', 'amqps://guest:guest@127.0.0.1:1/vhost']) {
      const t = openTransport(url, { amqp: { namespace: 'never-used', queueType: 'classic' } });
      expect(t, url).toBeInstanceOf(AmqpTransport);
      expect(t.name).toBe('amqp');
      await t.close();
    }
  });

  it('opens nats:// as the NATS JetStream transport', async () => {
    expect(parseTransportUrl('nats://127.0.0.1:4222')).toEqual({ scheme: 'nats', url: 'nats://127.0.0.1:4222' });
    const t = openTransport('nats://127.0.0.1:1', { nats: { namespace: 'never_used' } });
    expect(t).toBeInstanceOf(NatsTransport);
    expect(t.name).toBe('nats');
    await t.close();
  });

  it.each([
    ['redis://bad host', /is not a valid URL/],
    ['amqp://bad host', /is not a valid URL; write amqp:\/\/USER:PASS@HOST:PORT\[\/VHOST\]/],
    [
      'kafka://x',
      /unsupported transport URL 'kafka:\/\/x'; supported: memory:, sqlite:PATH.*amqps:\/\/.*nats:\/\/HOST:PORT/,
    ],
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
