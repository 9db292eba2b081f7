import { type Clock, ConfigError, positiveInteger, positiveNumber, systemClock } from '@agentbus/core';

/** The queue type of the group queues (and their retry and dead-letter queues). */
export type AmqpQueueType = 'quorum' | 'classic';

export interface AmqpTransportOptions {
  /** `amqp://user:pass@host:port[/vhost]` or `amqps://…`. Default `amqp://guest:guest@127.0.0.1:5672`. */
  readonly url?: string;
  /**
   * Prefix of every exchange and queue the transport declares (default `agentbus`): the topic
   * exchange is `<namespace>`, a group's queue `<namespace>.q.<group>`.
   */
  readonly namespace?: string;
  /**
   * `quorum` (default): replicated, at-least-once dead-lettering, no priorities on RabbitMQ 3.10.
   * `classic`: durable classic queues with `x-max-priority` 9, so priorities are honoured.
   */
  readonly queueType?: AmqpQueueType;
  /**
   * Classic queues only: `x-max-priority` of the group queues (default 9, the bus's highest
   * priority, so all ten levels are distinct). `0` declares plain classic queues without
   * priorities, which RabbitMQ serves about twice as fast.
   */
  readonly maxPriority?: number;
  /** AMQP heartbeat in seconds: a dead broker or peer is noticed within about twice this. */
  readonly heartbeatS?: number;
  /** Reconnect backoff: first delay and cap (ms); the delay doubles with jitter. */
  readonly reconnect?: { readonly initialMs?: number; readonly maxMs?: number };
  /**
   * Retry delays (ms) available to `nack({ delayMs })`, one TTL queue per step per group; a delay
   * is rounded up to the next step (never delivered early), and capped at the last.
   */
  readonly retryLadderMs?: readonly number[];
  /**
   * Most messages a group queue holds; beyond it publishes are refused (`overflow:
   * reject-publish`) and `publish` rejects with a retryable error. Default: unbounded.
   */
  readonly maxQueueLength?: number;
  /** How long a publish waits for the broker's confirm before it fails with TimeoutError. */
  readonly confirmTimeoutMs?: number;
  readonly clock?: Clock;
}

/** Defaults of {@link AmqpTransportOptions}. */
export const AMQP_TRANSPORT_DEFAULTS = Object.freeze({
  url: 'amqp://guest:guest@127.0.0.1:5672',
  namespace: 'agentbus',
  queueType: 'quorum' as AmqpQueueType,
  maxPriority: 9,
  heartbeatS: 5,
  reconnect: Object.freeze({ initialMs: 100, maxMs: 5_000 }),
  retryLadderMs: Object.freeze([
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 300_000, 900_000, 3_600_000, 21_600_000, 86_400_000,
  ]),
  confirmTimeoutMs: 30_000,
});

export interface ResolvedAmqpOptions {
  readonly url: string;
  readonly namespace: string;
  readonly queueType: AmqpQueueType;
  readonly maxPriority: number;
  readonly heartbeatS: number;
  readonly reconnect: { readonly initialMs: number; readonly maxMs: number };
  readonly retryLadderMs: readonly number[];
  readonly maxQueueLength: number | undefined;
  readonly confirmTimeoutMs: number;
  readonly clock: Clock;
}

const KNOWN = new Set([
  'url',
  'namespace',
  'queueType',
  'maxPriority',
  'heartbeatS',
  'reconnect',
  'retryLadderMs',
  'maxQueueLength',
  'confirmTimeoutMs',
  'clock',
]);

/** Validates once and fills in defaults; throws ConfigError naming the field. */
export function resolveAmqpOptions(options: AmqpTransportOptions = {}): ResolvedAmqpOptions {
  if (options === null || typeof options !== 'object') throw new ConfigError('an options object is required');
  for (const key of Object.keys(options)) {
    if (!KNOWN.has(key)) throw new ConfigError('unknown option', { path: key });
  }
  const d = AMQP_TRANSPORT_DEFAULTS;
  const url = options.url ?? d.url;
  if (typeof url !== 'string' || !/^amqps?:\/\//.test(url)) {
    throw new ConfigError(`must be an amqp:// or amqps:// URL, got ${JSON.stringify(url)}`, { path: 'url' });
  }
  const namespace = options.namespace ?? d.namespace;
  if (typeof namespace !== 'string' || !/^[A-Za-z0-9_\-:.]{1,100}$/.test(namespace)) {
    throw new ConfigError(`must be 1–100 characters of [A-Za-z0-9_-:.], got ${JSON.stringify(namespace)}`, {
      path: 'namespace',
    });
  }
  const queueType = options.queueType ?? d.queueType;
  if (queueType !== 'quorum' && queueType !== 'classic') {
    throw new ConfigError(`must be quorum or classic, got ${JSON.stringify(queueType)}`, { path: 'queueType' });
  }
  const maxPriority = options.maxPriority ?? d.maxPriority;
  if (!Number.isInteger(maxPriority) || maxPriority < 0 || maxPriority > 9) {
    throw new ConfigError(`must be an integer 0–9, got ${String(maxPriority)}`, { path: 'maxPriority' });
  }
  const ladder = options.retryLadderMs ?? d.retryLadderMs;
  if (!Array.isArray(ladder) || ladder.length === 0) {
    throw new ConfigError('must be a non-empty array of delays in ms', { path: 'retryLadderMs' });
  }
  ladder.forEach((ms, i) => {
    positiveInteger(ms, `retryLadderMs[${i}]`);
    if (i > 0 && ms <= (ladder[i - 1] as number)) {
      throw new ConfigError('must be strictly increasing', { path: `retryLadderMs[${i}]` });
    }
  });
  const clock = options.clock ?? systemClock;
  if (typeof clock?.now !== 'function') throw new ConfigError('must have a now() method', { path: 'clock' });
  return {
    url,
    namespace,
    queueType,
    maxPriority,
    heartbeatS: positiveInteger(options.heartbeatS ?? d.heartbeatS, 'heartbeatS'),
    reconnect: {
      initialMs: positiveNumber(options.reconnect?.initialMs ?? d.reconnect.initialMs, 'reconnect.initialMs'),
      maxMs: positiveNumber(options.reconnect?.maxMs ?? d.reconnect.maxMs, 'reconnect.maxMs'),
    },
    retryLadderMs: [...ladder],
    maxQueueLength:
      options.maxQueueLength === undefined ? undefined : positiveInteger(options.maxQueueLength, 'maxQueueLength'),
    confirmTimeoutMs: positiveNumber(options.confirmTimeoutMs ?? d.confirmTimeoutMs, 'confirmTimeoutMs'),
    clock,
  };
}
