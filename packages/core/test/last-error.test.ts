import { LAST_ERROR_MAX_BYTES, type ManagedDelivery, memoryTransport, truncateLastError } from '@agentbus/core';
import { describe, expect, it } from 'vitest';

const bytes = (s: string) => Buffer.byteLength(s, 'utf8');

describe('truncateLastError', () => {
  it('keeps a text that fits, up to exactly the limit', () => {
    expect(truncateLastError('HANDLER: boom')).toBe('HANDLER: boom');
    const exact = 'x'.repeat(LAST_ERROR_MAX_BYTES);
    expect(truncateLastError(exact)).toBe(exact);
    const multibyte = 'é'.repeat(LAST_ERROR_MAX_BYTES / 2);
    expect(truncateLastError(multibyte)).toBe(multibyte);
  });

  it('cuts a longer text to at most the limit in UTF-8 bytes, ending with an ellipsis', () => {
    const cut = truncateLastError('x'.repeat(LAST_ERROR_MAX_BYTES + 1));
    expect(cut).toBe(`${'x'.repeat(LAST_ERROR_MAX_BYTES - 3)}…`);
    expect(bytes(cut)).toBe(LAST_ERROR_MAX_BYTES);
  });

  it('never cuts inside a character or a surrogate pair', () => {
    for (const unit of ['é', '✓', '🦜', 'a🦜']) {
      const cut = truncateLastError(unit.repeat(2_000));
      expect(bytes(cut)).toBeLessThanOrEqual(LAST_ERROR_MAX_BYTES);
      expect(bytes(cut)).toBeGreaterThan(LAST_ERROR_MAX_BYTES - 8);
      expect(cut.endsWith('…')).toBe(true);
      expect(Buffer.from(cut, 'utf8').toString('utf8')).toBe(cut); // no lone surrogate
      expect(unit.repeat(2_000).startsWith(cut.slice(0, -1))).toBe(true);
    }
  });

  it('honours another limit', () => {
    expect(truncateLastError('abcdefgh', 6)).toBe('abc…');
  });
});

describe('memory transport lastError', () => {
  const next = async (it: AsyncIterator<ManagedDelivery>) => (await it.next()).value as ManagedDelivery;

  it('a redelivery released unseen on close keeps its lastError; a handed-out one comes back without', async () => {
    const t = memoryTransport();
    const options = { group: 'w', prefetch: 2, ackTimeoutMs: 30_000 };
    const first = await t.subscribe('jobs', options);
    const it1 = first[Symbol.asyncIterator]();
    const m = (id: string) => ({ id, topic: 'jobs', body: Buffer.from(id), headers: {}, priority: 4 });
    await t.publish([m('a'), m('b')]);
    for (let i = 0; i < 2; i++) {
      const d = await next(it1);
      await d.nack({ error: `failed ${d.message.id}` });
    }
    // One claim takes both redeliveries: the first is handed out, the second stays buffered.
    const handedOut = await next(it1);
    expect([handedOut.message.id, handedOut.attempt, handedOut.lastError]).toEqual(['a', 2, 'failed a']);
    await first.close();

    const it2 = (await t.subscribe('jobs', options))[Symbol.asyncIterator]();
    const got = [];
    for (let i = 0; i < 2; i++) {
      const d = await next(it2);
      got.push([d.message.id, d.attempt, d.lastError]);
      await d.ack();
    }
    expect(got.sort()).toEqual([
      ['a', 3, undefined],
      ['b', 2, 'failed b'],
    ]);
    await t.close();
  });
});
