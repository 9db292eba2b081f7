import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ManualClock } from '@agentbus/core';
import { sqliteIdempotencyStore } from '@agentbus/sqlite';
import { afterAll, describe, expect, it } from 'vitest';

const dir = mkdtempSync(join(tmpdir(), 'agentbus-idem-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('SQLite idempotency store', () => {
  it('keeps what was done across a reopen, and lets two connections race for one claim', async () => {
    const path = join(dir, 'reopen.db');
    const clock = new ManualClock();
    const a = sqliteIdempotencyStore({ path, clock });
    const b = sqliteIdempotencyStore({ path, clock });
    const results = await Promise.all([a.begin('g\0s\0m1', 1_000), b.begin('g\0s\0m1', 1_000)]);
    expect(results.sort()).toEqual(['busy', 'new']);
    await a.complete('g\0s\0m1', 60_000);
    a.close();
    b.close();
    const again = sqliteIdempotencyStore({ path, clock });
    expect(await again.begin('g\0s\0m1', 1_000)).toBe('done');
    clock.advance(60_001);
    expect(await again.begin('g\0s\0m1', 1_000)).toBe('new');
    await again.release('g\0s\0m1');
    expect(await again.begin('g\0s\0m1', 1_000)).toBe('new');
    again.close();
  });
});
