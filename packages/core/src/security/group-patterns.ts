import { topicMatches } from '../envelope.js';
import type { SubscribeContext } from '../middleware.js';

/** Groups whose patterns one middleware remembers at most; the one subscribed longest ago is forgotten first. */
const MAX_GROUPS = 10_000;

/**
 * Which topics a consumer group may deliver, as far as this process knows: a group is one queue
 * bound to the patterns of all its members, so a subscription may be handed a message of another
 * member's pattern. Middleware that refuses a message whose (signed or rule-selecting) topic is not
 * one the group is bound to records the patterns of the subscriptions made through it with
 * {@link GroupPatterns.subscribed} (its subscribe hook). Patterns of members in other processes
 * are not known: there, only the subscription's own pattern counts. Forgetting is on the safe
 * side (fewer topics accepted).
 */
export class GroupPatterns {
  readonly #byGroup = new Map<string, Set<string>>();

  /** A subscribe hook: records the pattern under its group. */
  readonly subscribed = (ctx: SubscribeContext): void => {
    let patterns = this.#byGroup.get(ctx.group);
    if (patterns === undefined) {
      if (this.#byGroup.size >= MAX_GROUPS) this.#byGroup.delete(this.#byGroup.keys().next().value as string);
      patterns = new Set();
    } else this.#byGroup.delete(ctx.group);
    patterns.add(ctx.pattern);
    this.#byGroup.set(ctx.group, patterns);
  };

  /** Whether `topic` is matched by `pattern` (the delivering subscription's) or by another pattern of `group`. */
  delivers(group: string, pattern: string, topic: string): boolean {
    if (topicMatches(pattern, topic)) return true;
    const patterns = this.#byGroup.get(group);
    if (patterns !== undefined) for (const p of patterns) if (topicMatches(p, topic)) return true;
    return false;
  }
}
