import { topicMatches } from '@agentbus/core';

/** A group's registry entry: when each of its patterns was first declared (server ms). */
export interface GroupEntry {
  readonly patterns: Readonly<Record<string, number>>;
  /** An ephemeral group: held until this time (server ms), renewed by its subscription. */
  readonly ephemeral?: number;
}

/** Whether the group counts now: durable, or ephemeral and still held at `nowMs`. */
export function isLive(entry: GroupEntry, nowMs: number): boolean {
  return entry.ephemeral === undefined || entry.ephemeral > nowMs;
}

/** When `group` started receiving `topic`: the earliest declaration of its patterns that match, if any. */
export function declaredFor(entry: GroupEntry, topic: string): number | undefined {
  let first = Number.POSITIVE_INFINITY;
  for (const [pattern, ms] of Object.entries(entry.patterns)) {
    if (ms < first && topicMatches(pattern, topic)) first = ms;
  }
  return Number.isFinite(first) ? first : undefined;
}

/** Parses a registry entry; undefined when damaged. */
export function parseGroupEntry(json: string | null | undefined): GroupEntry | undefined {
  if (!json) return undefined;
  try {
    const v = JSON.parse(json) as GroupEntry;
    return v && typeof v.patterns === 'object' && v.patterns !== null ? v : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The stream id a group starts after on a topic it was declared for at `ms`: the last possible
 * id of the millisecond before, so an entry added in the same millisecond as the declaration
 * (`<ms>-0`) is still delivered.
 */
export function startId(ms: number): string {
  return `${ms - 1}-18446744073709551615`;
}

/**
 * On a cluster the declaration time (the registry's node) and a topic's stream ids (its own
 * node) come from different clocks: groups start, and retention stops, this much earlier there,
 * trading a few extra deliveries for no loss under clock skew.
 */
export const CLUSTER_CLOCK_MARGIN_MS = 5_000;
