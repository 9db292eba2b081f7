import type { Codec } from './codec.js';
import type { DeadLetterStore } from './transport.js';

export interface ReplayWorkflowOptions {
  readonly deadLetters: DeadLetterStore;
  /** The codec the bus uses, to read the workflow id and sequence of dead letters. */
  readonly codec: Codec;
  readonly workflowId: string;
  readonly group?: string;
  /** Only sequences in this range (inclusive), e.g. a reported gap. */
  readonly fromSeq?: number;
  readonly toSeq?: number;
  /** Only dead letters with this reason (e.g. `workflow-blocked`). */
  readonly reason?: string;
  /** Dead letters looked at, at most (default 10,000). */
  readonly limit?: number;
}

/**
 * Replays the dead letters of one workflow in sequence order (then in dead-letter order): the
 * message that blocked it and those held behind it, or the messages of a reported gap. Resolves
 * with the number replayed.
 */
export async function replayWorkflow(o: ReplayWorkflowOptions): Promise<number> {
  const records = await o.deadLetters.list({ group: o.group, reason: o.reason, limit: o.limit ?? 10_000 });
  const picked: { id: string; seq: number; atMs: number }[] = [];
  for (const r of records) {
    let env: { workflowid?: string; sequence?: number };
    try {
      env = o.codec.decode(r.message.body);
    } catch {
      continue; // undecodable: not ours to judge
    }
    if (env.workflowid !== o.workflowId) continue;
    const seq = env.sequence ?? Number.POSITIVE_INFINITY;
    if (o.fromSeq !== undefined && seq < o.fromSeq) continue;
    if (o.toSeq !== undefined && seq > o.toSeq) continue;
    picked.push({ id: r.id, seq, atMs: r.deadLetteredAtMs });
  }
  picked.sort((a, b) => a.seq - b.seq || a.atMs - b.atMs);
  let n = 0;
  for (const p of picked) n += await o.deadLetters.replay(p.id);
  return n;
}
