import { type AmqpTransportOptions, amqpTransport } from '@agentbus/amqp';
import { ConfigError, type MemoryTransportOptions, memoryTransport, type Transport } from '@agentbus/core';
import { type NatsTransportOptions, natsTransport } from '@agentbus/nats';
import { type RedisTransportOptions, redisTransport } from '@agentbus/redis';
import { type SqliteTransportOptions, sqliteTransport } from '@agentbus/sqlite';

/** Where the CLI keeps its bus when no transport is given: a file next to the working directory. */
export const DEFAULT_TRANSPORT_URL = 'sqlite:./.agentbus/bus.db';

/** Per-transport options passed through to the factory the URL selects. */
export interface OpenTransportOptions {
  readonly memory?: MemoryTransportOptions;
  /** Everything but `path`, which comes from the URL. */
  readonly sqlite?: Omit<SqliteTransportOptions, 'path'>;
  /** Everything but `url`, which is the URL itself. */
  readonly redis?: Omit<RedisTransportOptions, 'url'>;
  /** Everything but `url`, which is the URL itself. */
  readonly amqp?: Omit<AmqpTransportOptions, 'url'>;
  /** Everything but `url`, which is the URL itself. */
  readonly nats?: Omit<NatsTransportOptions, 'url'>;
}

/** The URL forms `openTransport` understands, for error messages and help text. */
export const SUPPORTED_TRANSPORT_URLS = Object.freeze([
  'memory:',
  'sqlite:PATH',
  'sqlite::memory:',
  'redis://HOST:PORT[/DB]',
  'rediss://HOST:PORT[/DB]',
  'amqp://USER:PASS@HOST:PORT[/VHOST]',
  'amqps://USER:PASS@HOST:PORT[/VHOST]',
  'nats://HOST:PORT[,nats://HOST:PORT…]',
]);

/** A parsed transport URL. */
export type TransportUrl =
  | { readonly scheme: 'memory' }
  | { readonly scheme: 'sqlite'; readonly path: string }
  | { readonly scheme: 'redis'; readonly url: string }
  | { readonly scheme: 'amqp'; readonly url: string }
  | { readonly scheme: 'nats'; readonly url: string };

/**
 * The scheme of a transport URL a benchmark runs on: as {@link parseTransportUrl}, except that
 * `sqlite:` alone is fine (the benchmark uses a fresh file of its own in any case).
 */
export function benchSchemeOf(url: string): TransportUrl['scheme'] {
  return url === 'sqlite:' ? 'sqlite' : parseTransportUrl(url).scheme;
}

/**
 * Parses a transport URL without opening anything: `memory:`, `sqlite:PATH` (relative or
 * absolute; `sqlite::memory:` for a private in-memory database). Throws ConfigError (path
 * `transport`) for anything else, naming the supported forms.
 */
export function parseTransportUrl(url: string): TransportUrl {
  if (typeof url !== 'string' || url.trim() === '') {
    throw new ConfigError(`a transport URL is required; use one of ${SUPPORTED_TRANSPORT_URLS.join(', ')}`, {
      path: 'transport',
    });
  }
  if (url === 'memory:' || url === 'memory://') return { scheme: 'memory' };
  if (url.startsWith('sqlite:')) {
    const path = url.slice('sqlite:'.length);
    if (path === '') {
      throw new ConfigError(`'${url}' has no database path; write sqlite:PATH, e.g. ${DEFAULT_TRANSPORT_URL}`, {
        path: 'transport',
      });
    }
    return { scheme: 'sqlite', path };
  }
  if (/^rediss?:\/\//i.test(url)) {
    try {
      new URL(url);
    } catch {
      throw new ConfigError(`'${url}' is not a valid URL; write redis://HOST:PORT[/DB]`, { path: 'transport' });
    }
    return { scheme: 'redis', url };
  }
  if (/^amqps?:\/\//i.test(url)) {
    try {
      new URL(url);
    } catch {
      throw new ConfigError(`'${url}' is not a valid URL; write amqp://USER:PASS@HOST:PORT[/VHOST]`, {
        path: 'transport',
      });
    }
    return { scheme: 'amqp', url };
  }
  if (/^(nats|tls):\/\//i.test(url)) return { scheme: 'nats', url };
  throw new ConfigError(`unsupported transport URL '${url}'; supported: ${SUPPORTED_TRANSPORT_URLS.join(', ')}`, {
    path: 'transport',
  });
}

/**
 * Creates the transport a URL names: `memory:` → `memoryTransport()`, `sqlite:PATH` →
 * `sqliteTransport({ path })`, `redis://…` → `redisTransport({ url })`, `amqp://…` → `amqpTransport({ url })`. The transport is not connected yet; it connects lazily or on
 * `connect()`. Throws ConfigError for unknown or not-yet-installed schemes.
 */
export function openTransport(url: string, options: OpenTransportOptions = {}): Transport {
  const parsed = parseTransportUrl(url);
  if (parsed.scheme === 'memory') return memoryTransport(options.memory);
  if (parsed.scheme === 'redis') return redisTransport({ ...options.redis, url: parsed.url });
  if (parsed.scheme === 'amqp') return amqpTransport({ ...options.amqp, url: parsed.url });
  if (parsed.scheme === 'nats') return natsTransport({ ...options.nats, url: parsed.url });
  return sqliteTransport({ ...options.sqlite, path: parsed.path });
}
