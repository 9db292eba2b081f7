import type { Bus } from './bus.js';
import type { CheckpointStore } from './checkpoint-store.js';
import type { Envelope, PublishOptions } from './envelope.js';
import { ClosedError, ConfigError, isRetryable, ValidationError } from './errors.js';
import type { EventStore, StoredEvent } from './event-store.js';
import { type Logger, stderrLogger } from './logger.js';
import { type Projection, projection } from './projection.js';

/** Headers a relayed envelope carries besides the event's metadata. */
export const EVENT_HEADERS = Object.freeze({ position: 'es-position', time: 'es-time' });

export interface EventRelayOptions {
  readonly store: EventStore;
  /** The bus to publish on (any transport). */
  readonly bus: Bus;
  /** Where the relay keeps the last position it published (use the store's durable `checkpoints`). */
  readonly checkpoints: CheckpointStore;
  /** Checkpoint name (default `bus-relay`); one running relay per name. */
  readonly name?: string;
  /** The topic of an event: fixed, or computed (default {@link defaultEventTopic}: `es.<category>`). */
  readonly topic?: string | ((event: StoredEvent) => string);
  /** `source` of the envelopes (default: the bus's). Keep it fixed: dedup keys on source + id. */
  readonly source?: string;
  /** Save the checkpoint after this many published events (default 1). */
  readonly checkpointEvery?: number;
  readonly logger?: Logger;
}

const SEGMENT_UNSAFE = /[^A-Za-z0-9_\-:@$]/g;

/**
 * `es.<category>`, the category being the stream id up to its first `-` (`order-42` → `es.order`),
 * with characters a topic segment cannot hold replaced by `_`.
 */
export function defaultEventTopic(event: Pick<StoredEvent, 'streamId'>): string {
  const dash = event.streamId.indexOf('-');
  const category = (dash > 0 ? event.streamId.slice(0, dash) : event.streamId).replace(SEGMENT_UNSAFE, '_');
  return `es.${category || 'stream'}`;
}

/**
 * How the relay publishes an event: envelope `id` = event id (so redeliveries and re-publishes are
 * recognised by dedup and by JetStream), `type` = event type, `workflowid` = stream id, `sequence` =
 * version (so the sequencing middleware orders each stream), metadata as headers plus
 * `es-position` and `es-time`.
 */
export function eventPublishOptions(event: StoredEvent, source?: string): PublishOptions {
  return {
    id: event.id,
    type: event.type,
    workflowid: event.streamId,
    sequence: event.version,
    headers: { ...event.metadata, [EVENT_HEADERS.position]: String(event.position), [EVENT_HEADERS.time]: event.time },
    ...(source === undefined ? {} : { source }),
  };
}

/** The stored event a relayed envelope carries; ValidationError if it was not published by a relay. */
export function eventFromEnvelope<T>(envelope: Envelope<T>): StoredEvent<T> {
  const headers = envelope.headers ?? {};
  const position = Number(headers[EVENT_HEADERS.position]);
  if (envelope.workflowid === undefined || envelope.sequence === undefined || !Number.isSafeInteger(position)) {
    throw new ValidationError(`envelope ${envelope.id} is not a relayed event (workflowid, sequence, es-position)`);
  }
  const metadata: Record<string, string> = {};
  for (const [k, v] of Object.entries(headers)) if (!k.startsWith('es-')) metadata[k] = v;
  return {
    streamId: envelope.workflowid,
    version: envelope.sequence,
    position,
    id: envelope.id,
    type: envelope.type,
    data: envelope.data,
    metadata,
    time: headers[EVENT_HEADERS.time] ?? envelope.time,
  };
}

/** Longest wait between publish attempts while the transport fails. */
const MAX_RETRY_DELAY_MS = 5_000;

/**
 * Publishes every event of the store on the bus, in position order, from the position after its
 * checkpoint — an outbox: appends never wait for the bus, and a relay that stopped or crashed
 * resumes from its checkpoint. Delivery is at-least-once: events published after the last saved
 * checkpoint are published again on restart, with the same envelope id (dedup middleware or
 * JetStream's duplicate window drop them). A publish that fails with a retryable error (a lost
 * connection) is retried with backoff until it succeeds or the relay stops; any other failure (an
 * event too large, a topic that is not valid) stops the relay at that event (`done` rejects).
 */
export function eventRelay(options: EventRelayOptions): Projection {
  const { bus, topic = defaultEventTopic, source } = options;
  if (typeof bus?.publish !== 'function') throw new ConfigError('a Bus is required', { path: 'bus' });
  if (typeof topic !== 'string' && typeof topic !== 'function') {
    throw new ConfigError('must be a topic or a function', { path: 'topic' });
  }
  const topicOf = typeof topic === 'string' ? () => topic : topic;
  const logger = options.logger ?? stderrLogger;
  const name = options.name ?? 'bus-relay';
  let stopping = false;
  let wake: (() => void) | undefined;

  const publish = async (event: StoredEvent) => {
    const publishOptions = eventPublishOptions(event, source);
    for (let failures = 0; ; failures++) {
      try {
        await bus.publish(topicOf(event), event.data, publishOptions);
        return;
      } catch (err) {
        if (stopping) throw new ClosedError(`relay ${name} stopped while publishing`, { cause: err });
        if (!isRetryable(err)) throw err;
        const delayMs = Math.min(MAX_RETRY_DELAY_MS, 100 * 2 ** failures);
        logger.warn({ err, relay: name, position: event.position, delayMs }, 'relaying an event failed; retrying');
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, delayMs);
          wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
      }
    }
  };

  const inner = projection({
    store: options.store,
    name,
    checkpoints: options.checkpoints,
    handle: publish,
    ...(options.checkpointEvery === undefined ? {} : { checkpointEvery: options.checkpointEvery }),
    logger,
  });
  const stop = () => {
    stopping = true;
    wake?.();
    return inner.stop();
  };
  return {
    name,
    get position() {
      return inner.position;
    },
    done: inner.done,
    waitFor: (position, timeoutMs) => inner.waitFor(position, timeoutMs),
    stop,
    [Symbol.asyncDispose]: stop,
  };
}
