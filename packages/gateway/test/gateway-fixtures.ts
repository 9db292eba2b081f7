import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serverSkipReason } from '@agentbus/conformance';
import {
  type Bus,
  createBus,
  createJwtIssuer,
  createJwtVerifier,
  memoryTransport,
  type Transport,
} from '@agentbus/core';
import { createGateway, type Gateway, type GatewayOptions } from '@agentbus/gateway';
import { redisTransport } from '@agentbus/redis';
import { sqliteTransport } from '@agentbus/sqlite';
import { Redis } from 'ioredis';
import { afterAll } from 'vitest';

/** A JSON response body; tests check its shape with assertions. */
// biome-ignore lint/suspicious/noExplicitAny: response bodies are checked by the assertions that read them
export type Json = any;

export const REDIS_URL = process.env.AGENTBUS_REDIS_URL ?? 'redis://127.0.0.1:6379';

/** A transport the gateway tests run on, with its clean-up. */
export interface TransportFixture {
  readonly name: string;
  /** Set when the backend is unreachable outside CI (the suite skips); under CI the lookup throws. */
  readonly skipReason?: string | undefined;
  open(): Transport;
  cleanup(): Promise<void>;
}

export function memoryFixture(): TransportFixture {
  return { name: 'memory', open: () => memoryTransport(), cleanup: async () => {} };
}

export function sqliteFixture(): TransportFixture {
  const dir = mkdtempSync(join(tmpdir(), 'agentbus-gw-'));
  let n = 0;
  return {
    name: 'sqlite',
    open: () => sqliteTransport({ path: join(dir, `bus-${n++}.db`), pollIntervalMs: 10 }),
    cleanup: async () => rmSync(dir, { recursive: true, force: true }),
  };
}

export async function redisFixture(name: string): Promise<TransportFixture> {
  const skipReason = await serverSkipReason('Redis', REDIS_URL, 6379);
  const keyPrefix = `agentbus-test:gw-${name}:${randomBytes(4).toString('hex')}`;
  return {
    name: 'redis',
    skipReason,
    open: () => redisTransport({ url: REDIS_URL, keyPrefix, pollIntervalMs: 20 }),
    cleanup: async () => {
      if (skipReason) return;
      const redis = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1 });
      try {
        await redis.connect();
        let cursor = '0';
        do {
          const [next, keys] = await redis.scan(cursor, 'MATCH', `${keyPrefix}:*`, 'COUNT', 1000);
          cursor = next;
          if (keys.length > 0) await redis.del(...keys);
        } while (cursor !== '0');
      } finally {
        redis.disconnect();
      }
    },
  };
}

/** A bus over `fixture` and a listening gateway on it; `stop` closes both. */
export interface RunningGateway {
  readonly bus: Bus;
  readonly gateway: Gateway;
  readonly url: string;
  stop(): Promise<void>;
}

export async function startGateway(
  fixture: TransportFixture,
  options: Omit<GatewayOptions, 'bus'> = {},
): Promise<RunningGateway> {
  const bus = createBus({ transport: fixture.open() });
  await bus.transport.connect();
  const gateway = await createGateway({ bus, logger: false, dashboard: false, ...options });
  const url = await gateway.listen({ port: 0 });
  return {
    bus,
    gateway,
    url,
    async stop() {
      await gateway.close();
      await bus.close();
    },
  };
}

export const JWT_ISSUER = 'agentbus-tests';
export const JWT_AUDIENCE = 'agentbus-gateway';

/** An HS256 issuer and the matching verifier options. */
export function jwtPair(secret = randomBytes(32)) {
  const issuer = createJwtIssuer({ key: secret, alg: 'HS256', issuer: JWT_ISSUER, audience: JWT_AUDIENCE });
  const verifier = createJwtVerifier({
    keys: [{ key: secret, alg: 'HS256' }],
    issuer: JWT_ISSUER,
    audience: JWT_AUDIENCE,
  });
  return { issuer, verifier };
}

/** JSON POST helper. */
export async function post(url: string, body: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: text === '' ? undefined : (JSON.parse(text) as Json) };
}

export async function get(url: string, headers: Record<string, string> = {}) {
  const res = await fetch(url, { headers });
  const text = await res.text();
  let body: Json;
  try {
    body = JSON.parse(text);
  } catch {
    body = text;
  }
  return { status: res.status, headers: res.headers, body };
}

export async function del(url: string, headers: Record<string, string> = {}) {
  const res = await fetch(url, { method: 'DELETE', headers });
  return { status: res.status, body: (await res.json()) as Json };
}

export function uniqueTopic(prefix: string): string {
  return `${prefix}.${randomBytes(4).toString('hex')}`;
}

/** A small seeded generator (mulberry32): the fuzz tests replay the same cases for a seed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Memory, SQLite and Redis (its keys under `name`), cleaned up after the file's tests. */
export async function embeddedAndRedisFixtures(name: string): Promise<TransportFixture[]> {
  const fixtures = [memoryFixture(), sqliteFixture(), await redisFixture(name)];
  afterAll(async () => {
    for (const f of fixtures) await f.cleanup();
  });
  return fixtures;
}
