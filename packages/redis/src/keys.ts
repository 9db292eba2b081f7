import { ConfigError, MAX_PRIORITY } from '@agentbus/core';

/**
 * Key naming. Every key that belongs to a topic carries the topic as its Redis Cluster hash tag
 * (`<prefix>:{<topic>}:…`), so a topic's priority streams, its per-group retry streams, delayed
 * sets and dead-letter streams share one slot and every script that moves a message between
 * them is atomic, on a cluster too. Topics cannot contain braces, so the tag is always the topic.
 */
export class RedisKeys {
  /** Set of every topic published to (for pattern subscriptions and retention). */
  readonly topics: string;
  /** Hash: group → JSON `{ patterns: { <pattern>: <declared at, server ms> } }`. */
  readonly groups: string;
  /** Set of dead-letter stream keys. */
  readonly deadLetters: string;
  /** Pub/sub channel announcing a topic's first publish. */
  readonly topicChannel: string;
  /** Lock so that one process at a time runs the retention pass. */
  readonly trimLock: string;

  constructor(readonly prefix: string) {
    if (typeof prefix !== 'string' || prefix === '' || /[{}\s]/.test(prefix)) {
      throw new ConfigError('must be a non-empty string without braces or spaces', { path: 'keyPrefix' });
    }
    this.topics = `${prefix}:topics`;
    this.groups = `${prefix}:groups`;
    this.deadLetters = `${prefix}:dead-letters`;
    this.topicChannel = `${prefix}:new-topic`;
    this.trimLock = `${prefix}:trim-lock`;
  }

  /** The stream of `topic` for one priority (0–9). */
  stream(topic: string, priority: number): string {
    return `${this.prefix}:{${topic}}:p${priority}`;
  }

  /** The ten priority streams of `topic`, highest priority first (the order they are read in). */
  streams(topic: string): string[] {
    const out: string[] = [];
    for (let p = MAX_PRIORITY; p >= 0; p--) out.push(this.stream(topic, p));
    return out;
  }

  /** Retries, nacked and released messages of `group` for `topic` (read by that group only). */
  retry(topic: string, group: string): string {
    return `${this.prefix}:{${topic}}:r:${group}`;
  }

  /** Sorted set of `group`'s delayed redeliveries of `topic`, scored by due time (server ms). */
  delayed(topic: string, group: string): string {
    return `${this.prefix}:{${topic}}:d:${group}`;
  }

  /** Dead letters of `group` from `topic`. */
  deadLetter(topic: string, group: string): string {
    return `${this.prefix}:{${topic}}:x:${group}`;
  }

  /** Topic and group of a dead-letter key of this prefix, or undefined. */
  parseDeadLetter(key: string): { topic: string; group: string } | undefined {
    const head = `${this.prefix}:{`;
    if (!key.startsWith(head)) return undefined;
    const close = key.indexOf('}:x:', head.length);
    if (close < 0) return undefined;
    return { topic: key.slice(head.length, close), group: key.slice(close + 4) };
  }

  /** A short-lived key for the deep health check's write/read round trip. */
  health(token: string): string {
    return `${this.prefix}:health:${token}`;
  }
}
