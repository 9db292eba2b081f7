import { ConfigError, ReorderBuffer } from '@agentbus/core';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';

/** A sequence 1…n, with some numbers repeated, in any order. */
const shuffledWithDuplicates = fc.integer({ min: 1, max: 80 }).chain((n) =>
  fc
    .array(fc.integer({ min: 1, max: n }), { maxLength: n })
    .chain((dups) => {
      const all = [...Array.from({ length: n }, (_, i) => i + 1), ...dups];
      return fc.shuffledSubarray(all, { minLength: all.length, maxLength: all.length });
    })
    .map((input) => ({ n, input })),
);

describe('reorder buffer', () => {
  it('releases any permutation with duplicates in order, each once, never holding more than its bound', () => {
    fc.assert(
      fc.property(shuffledWithDuplicates, fc.integer({ min: 1, max: 12 }), ({ n, input }, maxHeld) => {
        const buf = new ReorderBuffer<number>({ maxHeld });
        const queue = [...input];
        const out: number[] = [];
        let offers = 0;
        while (queue.length > 0) {
          const seq = queue.shift() as number;
          offers++;
          // Refused for lack of room: redelivered later, as a transport would.
          if (buf.offer(seq, seq) === 'full') queue.push(seq);
          if (buf.held > maxHeld) throw new Error(`holds ${buf.held}, over its bound ${maxHeld}`);
          for (let x = buf.next(); x; x = buf.next()) {
            out.push(x.item);
            buf.advance(x.seq);
          }
          if (offers > 100_000) throw new Error('no progress');
        }
        expect(out).toEqual(Array.from({ length: n }, (_, i) => i + 1));
        expect(buf.held).toBe(0);
      }),
      { numRuns: 300 },
    );
  });

  it('keeps the expected item until it is advanced, so a failed item can be offered again', () => {
    const buf = new ReorderBuffer<string>();
    expect(buf.offer(2, 'b')).toBe('held');
    expect(buf.next()).toBeUndefined();
    expect(buf.offer(1, 'a')).toBe('held');
    expect(buf.next()).toEqual({ seq: 1, item: 'a' });
    // The handler of 1 failed: nothing advanced, the redelivery of 1 is accepted again.
    expect(buf.expected).toBe(1);
    expect(buf.offer(1, 'a again')).toBe('held');
    expect(buf.next()?.item).toBe('a again');
    expect(buf.advance(1)).toEqual([]);
    expect(buf.next()?.item).toBe('b');
    expect(buf.offer(1, 'late copy')).toBe('duplicate');
  });

  it('skips a gap to the lowest held item and reports the missing range', () => {
    const buf = new ReorderBuffer<string>({ expected: 3 });
    expect(buf.skipGap()).toBeUndefined();
    buf.offer(7, 'g');
    buf.offer(9, 'i');
    expect(buf.skipGap()).toEqual({ from: 3, to: 6 });
    expect(buf.next()?.item).toBe('g');
    expect(buf.moveTo(10)).toEqual(['i']);
  });

  it('refuses items ahead of the expected one beyond its bound, but always takes the expected one', () => {
    const buf = new ReorderBuffer<number>({ maxHeld: 2 });
    expect(buf.offer(3, 3)).toBe('held');
    expect(buf.offer(4, 4)).toBe('held');
    expect(buf.offer(5, 5)).toBe('full');
    expect(buf.offer(3, 3)).toBe('duplicate');
    expect(buf.offer(1, 1)).toBe('held');
    expect(() => new ReorderBuffer({ maxHeld: 0 })).toThrow(ConfigError);
  });
});
