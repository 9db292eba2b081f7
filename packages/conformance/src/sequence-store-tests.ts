import type { SequenceStore } from '@agentbus/core';
import { afterEach, describe, expect, it } from 'vitest';

export interface SequenceStoreContractOptions {
  readonly name: string;
  /** A store over the backend; `name` separates tests sharing one backend. Durable stores reopen the same state for the same name. */
  readonly open: (name: string) => SequenceStore & { close?(): unknown };
  /** Whether a reopened store (same name) keeps the state (SQLite, Redis). */
  readonly durable: boolean;
}

let n = 0;

/** The behaviour every SequenceStore must have. */
export function sequenceStoreContract(o: SequenceStoreContractOptions): void {
  describe(`sequence store on ${o.name}`, () => {
    const opened: { close?(): unknown }[] = [];
    const open = (name: string) => {
      const s = o.open(name);
      opened.push(s);
      return s;
    };
    afterEach(async () => {
      for (const s of opened.splice(0)) await s.close?.();
    });
    const fresh = () => `t${process.pid}x${Date.now().toString(36)}x${n++}`;

    it('numbers each workflow from 1 and never hands out a number twice, also to concurrent callers', async () => {
      const s = open(fresh());
      expect(await s.nextSequence('a')).toBe(1);
      expect(await s.nextSequence('a')).toBe(2);
      expect(await s.nextSequence('b')).toBe(1);
      const many = await Promise.all(Array.from({ length: 50 }, () => s.nextSequence('c')));
      expect(new Set(many).size).toBe(50);
      expect(Math.max(...many)).toBe(50);
    });

    if (o.durable)
      it('continues the count and the expected sequence after a reopen', async () => {
        const name = fresh();
        const first = open(name);
        await first.nextSequence('w');
        await first.nextSequence('w');
        await first.advance('g', 'w', 2);
        await first.close?.();
        const again = open(name);
        expect(await again.nextSequence('w')).toBe(3);
        expect(await again.expected('g', 'w')).toBe(3);
      });

    it('moves the expected sequence forward only, per group', async () => {
      const s = open(fresh());
      expect(await s.expected('g', 'w')).toBe(1);
      expect(await s.advance('g', 'w', 1)).toBe(2);
      expect(await s.advance('g', 'w', 5)).toBe(6);
      expect(await s.advance('g', 'w', 3)).toBe(6);
      expect(await s.expected('g', 'w')).toBe(6);
      expect(await s.expected('other', 'w')).toBe(1);
    });

    it('remembers skipped ranges and gives each skipped number out once', async () => {
      const s = open(fresh());
      await s.skip('g', 'w', 2, 5);
      expect(await s.expected('g', 'w')).toBe(6);
      expect(await s.takeSkipped('g', 'w', 3)).toBe(true);
      expect(await s.takeSkipped('g', 'w', 3)).toBe(false);
      expect(await s.takeSkipped('g', 'w', 2)).toBe(true);
      expect(await s.takeSkipped('g', 'w', 5)).toBe(true);
      expect(await s.takeSkipped('g', 'w', 4)).toBe(true);
      expect(await s.takeSkipped('g', 'w', 4)).toBe(false);
      expect(await s.takeSkipped('g', 'w', 6)).toBe(false);
      expect(await s.takeSkipped('other', 'w', 3)).toBe(false);
    });

    it('blocks and unblocks workflows per group, and lists them', async () => {
      const s = open(fresh());
      const block = { messageId: 'm1', sequence: 4, reason: 'UNRECOVERABLE: bad tool call', atMs: 1_000 };
      await s.block('g', 'w', block);
      await s.block('g2', 'v', { messageId: 'm2', reason: 'max-attempts', atMs: 2_000 });
      expect(await s.blocked('g', 'w')).toEqual(block);
      expect(await s.blocked('g', 'v')).toBeUndefined();
      expect((await s.listBlocked()).map((b) => `${b.group}/${b.workflowId}`)).toEqual(['g/w', 'g2/v']);
      expect(await s.listBlocked('g2')).toEqual([
        { group: 'g2', workflowId: 'v', block: { messageId: 'm2', reason: 'max-attempts', atMs: 2_000 } },
      ]);
      expect(await s.unblock('g', 'w')).toBe(true);
      expect(await s.unblock('g', 'w')).toBe(false);
      expect(await s.blocked('g', 'w')).toBeUndefined();
    });
  });
}
