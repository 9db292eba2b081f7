import { ConfigError, ManualClock, memoryRateLimiter, TokenBucket, ValidationError } from '@agentbus/core';
import { describe, expect, it } from 'vitest';

describe('TokenBucket', () => {
  it('starts full, grants a burst of its capacity, then refuses with the time until enough tokens refill', () => {
    const clock = new ManualClock();
    const b = new TokenBucket({ capacity: 3, refillPerSecond: 2, clock });
    expect([b.take(), b.take(), b.take()].map((r) => r.allowed)).toEqual([true, true, true]);
    expect(b.take()).toEqual({ allowed: false, retryAfterMs: 500, remaining: 0 });
    clock.advance(499);
    expect(b.take().allowed).toBe(false);
    clock.advance(1);
    expect(b.take()).toEqual({ allowed: true, retryAfterMs: 0, remaining: 0 });
  });

  it('refills continuously but never above its capacity', () => {
    const clock = new ManualClock();
    const b = new TokenBucket({ capacity: 10, refillPerSecond: 4, clock });
    b.take(10);
    clock.advance(250);
    expect(b.tokens).toBeCloseTo(1);
    clock.advance(3_600_000);
    expect(b.tokens).toBe(10);
  });

  it('takes a cost of several tokens at once, or none of them', () => {
    const clock = new ManualClock();
    const b = new TokenBucket({ capacity: 1_000, refillPerSecond: 100, clock });
    expect(b.take(800)).toMatchObject({ allowed: true, remaining: 200 });
    // 300 needed, 200 there: nothing is taken, and 100 more tokens take one second.
    expect(b.take(300)).toEqual({ allowed: false, retryAfterMs: 1_000, remaining: 200 });
    expect(b.take(200)).toMatchObject({ allowed: true, remaining: 0 });
  });

  it('refuses a cost above its capacity as a ValidationError, since waiting would never help', () => {
    const b = new TokenBucket({ capacity: 100, refillPerSecond: 1 });
    expect(() => b.take(101)).toThrow(ValidationError);
    expect(() => b.take(101)).toThrow(/cost 101 can never be taken/);
    expect(() => b.take(-1)).toThrow(ValidationError);
    expect(() => b.take(Number.NaN)).toThrow(ValidationError);
    expect(b.take(0)).toMatchObject({ allowed: true, remaining: 100 });
  });

  it('keeps a reserve that a take may not dip into', () => {
    const clock = new ManualClock();
    const b = new TokenBucket({ capacity: 10, refillPerSecond: 1, clock });
    expect(b.take(7, { reserved: 3 }).allowed).toBe(true);
    expect(b.take(1, { reserved: 3 })).toEqual({ allowed: false, retryAfterMs: 1_000, remaining: 3 });
    expect(b.take(3).allowed).toBe(true); // no reserve for this caller: it may empty the bucket
    expect(() => b.take(8, { reserved: 3 })).toThrow(/3 of them are reserved/);
  });

  it('changes its rate without losing the tokens earned at the old one', () => {
    const clock = new ManualClock();
    const b = new TokenBucket({ capacity: 100, refillPerSecond: 10, clock });
    b.take(100);
    clock.advance(1_000); // 10 tokens at the old rate
    b.refillPerSecond = 1;
    clock.advance(1_000); // 1 more at the new one
    expect(b.tokens).toBeCloseTo(11);
    expect(() => {
      b.refillPerSecond = 0;
    }).toThrow(ConfigError);
  });

  it('names the bad option', () => {
    expect(() => new TokenBucket({ capacity: 0, refillPerSecond: 1 })).toThrow(/capacity: must be a positive number/);
    expect(() => new TokenBucket({ capacity: 1, refillPerSecond: -1 })).toThrow(/refillPerSecond/);
  });
});

describe('memoryRateLimiter', () => {
  const shape = { capacity: 2, refillPerSecond: 1 };

  it('keeps one bucket per key', async () => {
    const clock = new ManualClock();
    const limiter = memoryRateLimiter({ clock });
    const take = (key: string) => limiter.take(key, { ...shape, cost: 1 }).then((r) => r.allowed);
    expect([await take('a'), await take('a'), await take('a')]).toEqual([true, true, false]);
    expect(await take('b')).toBe(true);
    clock.advance(1_000);
    expect([await take('a'), await take('a')]).toEqual([true, false]);
  });

  it('takes the shape with each take, so one store serves limits of several sizes and rates', async () => {
    const clock = new ManualClock();
    const limiter = memoryRateLimiter({ clock });
    await limiter.take('k', { capacity: 10, refillPerSecond: 1, cost: 10 });
    clock.advance(1_000);
    // The elapsed second is refilled at the rate given now.
    expect(await limiter.take('k', { capacity: 10, refillPerSecond: 5, cost: 0 })).toMatchObject({ remaining: 5 });
  });

  it('forgets the least recently used bucket beyond maxKeys (it comes back full)', async () => {
    const clock = new ManualClock();
    const limiter = memoryRateLimiter({ clock, maxKeys: 2 });
    const take = (key: string) => limiter.take(key, { ...shape, cost: 2 }).then((r) => r.allowed);
    expect(await take('a')).toBe(true);
    expect(await take('b')).toBe(true);
    expect(await take('a')).toBe(false); // a is the most recently used now
    expect(await take('c')).toBe(true); // evicts b
    expect(await take('a')).toBe(false);
    expect(await take('b')).toBe(true);
  });

  it('refuses impossible takes before touching a bucket', async () => {
    const limiter = memoryRateLimiter();
    await expect(limiter.take('k', { ...shape, cost: 3 })).rejects.toBeInstanceOf(ValidationError);
    await expect(limiter.take('k', { ...shape, cost: 1, reserved: 2 })).rejects.toThrow(/reserved/);
    await expect(limiter.take('k', { capacity: 1, refillPerSecond: 0, cost: 1 })).rejects.toBeInstanceOf(ConfigError);
    expect(() => memoryRateLimiter({ maxKeys: 0 })).toThrow(/maxKeys/);
  });
});
