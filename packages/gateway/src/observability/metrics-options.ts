import { ConfigError } from '@agentbus/core';

export interface MetricsOptions {
  /** Distinct values of a `topic` or `group` label kept before later ones read `other` (default 1,000). */
  readonly maxLabelValues?: number;
  /** Buckets of `agentbus_handler_duration_seconds` (seconds; default 5 ms … 5 min: agents wait on models). */
  readonly handlerDurationBuckets?: readonly number[];
  /** Buckets of `agentbus_http_request_duration_seconds`. */
  readonly httpDurationBuckets?: readonly number[];
  /** Longest a scrape waits for the transport's group stats before it reports without them (default 2 s). */
  readonly groupStatsTimeoutMs?: number;
  /** Groups whose backlog one scrape asks the transport for at most (default 200). */
  readonly maxGroupStats?: number;
}

export const METRICS_DEFAULTS = Object.freeze({
  maxLabelValues: 1_000,
  handlerDurationBuckets: Object.freeze([0.005, 0.025, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300]),
  httpDurationBuckets: Object.freeze([0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]),
  groupStatsTimeoutMs: 2_000,
  maxGroupStats: 200,
});

/** Options with their defaults, checked once. */
export type ResolvedMetricsOptions = {
  readonly [K in keyof MetricsOptions]-?: NonNullable<MetricsOptions[K]>;
};

function positiveInt(value: unknown, path: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1)
    throw new ConfigError(`must be a positive integer, got ${JSON.stringify(value)}`, { path });
  return value;
}

function buckets(value: unknown, path: string): readonly number[] {
  if (
    !Array.isArray(value) ||
    value.length === 0 ||
    value.some((b, i) => typeof b !== 'number' || !(b > 0) || (i > 0 && b <= value[i - 1]))
  )
    throw new ConfigError('must be a non-empty, increasing list of positive numbers', { path });
  return value;
}

/** Validates metrics options; a ConfigError names the field (`metrics.maxLabelValues` …). */
export function resolveMetricsOptions(options: MetricsOptions = {}): ResolvedMetricsOptions {
  const D = METRICS_DEFAULTS;
  return {
    maxLabelValues: positiveInt(options.maxLabelValues ?? D.maxLabelValues, 'metrics.maxLabelValues'),
    handlerDurationBuckets: buckets(
      options.handlerDurationBuckets ?? D.handlerDurationBuckets,
      'metrics.handlerDurationBuckets',
    ),
    httpDurationBuckets: buckets(options.httpDurationBuckets ?? D.httpDurationBuckets, 'metrics.httpDurationBuckets'),
    groupStatsTimeoutMs: positiveInt(
      options.groupStatsTimeoutMs ?? D.groupStatsTimeoutMs,
      'metrics.groupStatsTimeoutMs',
    ),
    maxGroupStats: positiveInt(options.maxGroupStats ?? D.maxGroupStats, 'metrics.maxGroupStats'),
  };
}
