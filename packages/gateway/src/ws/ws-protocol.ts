import type { Envelope, WireError } from '@agentbus/core';

/** Limits of the WebSocket protocol that are not options (docs/protocol.md). */
export const WS_LIMITS = Object.freeze({
  /** Longest client-chosen frame `id`. */
  maxIdLength: 128,
  /** Default unacknowledged deliveries per subscription. */
  defaultPrefetch: 16,
  /** Largest `prefetch` a client may ask for. */
  maxPrefetch: 1_000,
  /** Subscriptions one connection may hold. */
  maxSubscriptions: 100,
  /** Frames of one connection being executed at once (publish, request, auth …); past it: RATE_LIMITED. */
  maxPendingOps: 256,
  /** Deepest nesting of arrays and objects in a frame. */
  maxDepth: 64,
  /** Longest consumer group / durable name. */
  maxGroupLength: 200,
  /** Longest nack error / dead-letter reason. */
  maxReasonLength: 1_024,
  /** Longest nack delay (1 day). */
  maxNackDelayMs: 86_400_000,
  /**
   * Delay of the nack that gives a gone client's unsettled deliveries back. Not 0: the closing
   * bus subscription would lease them again (one more attempt) before it stops.
   */
  releaseDelayMs: 250,
  /** How long a socket may stay unauthenticated. */
  authTimeoutMs: 10_000,
  /** How often expiry and revocation of every socket's token are checked (one shared timer). */
  authCheckIntervalMs: 250,
  /** After a close frame, how long the peer has to answer before the socket is cut. */
  closeGraceMs: 1_000,
  /** How long `closeAll` waits for sockets to close. */
  closeAllTimeoutMs: 5_000,
});

/** Close codes the gateway uses (besides the library's 1009 for an oversized frame). */
export const WS_CLOSE = Object.freeze({
  /** Server shutting down. */
  goingAway: 1001,
  /** Policy violation (used by browsers that refuse 4xxx codes in reports). */
  policy: 1008,
  /** Oversized frame (the `ws` library sends it; the frame's code is FRAME_TOO_LARGE). */
  tooLarge: 1009,
  /** Not authenticated, token invalid, expired or revoked. */
  unauthorized: 4401,
  /** The client does not read what it is sent (slow consumer). */
  slowConsumer: 4408,
});

/** Close reasons the gateway sends. */
export const WS_CLOSE_REASON = Object.freeze({
  unauthorized: 'unauthorized',
  authTimeout: 'auth-timeout',
  tokenExpired: 'token-expired',
  tokenRevoked: 'token-revoked',
  slowConsumer: 'slow-consumer',
  pingTimeout: 'ping-timeout',
});

/** Error codes of the protocol itself (besides every BusError code). */
export const WS_ERROR_CODES = Object.freeze([
  'INVALID_JSON',
  'BAD_FRAME',
  'UNKNOWN_OP',
  'FRAME_TOO_LARGE',
  'RATE_LIMITED',
  'UNAUTHORIZED',
  'FORBIDDEN',
  'VALIDATION',
  'NOT_FOUND',
] as const);

/** Frames the server sends. */
export type ServerFrame =
  | { readonly op: 'authenticated'; readonly id?: string; readonly subject: string; readonly expiresAtMs?: number }
  | { readonly op: 'subscribed'; readonly id?: string; readonly sub: string; readonly group: string }
  | { readonly op: 'unsubscribed'; readonly id?: string; readonly sub: string }
  | {
      readonly op: 'message';
      readonly sub: string;
      readonly delivery: string;
      readonly attempt: number;
      readonly envelope: Envelope;
    }
  | { readonly op: 'published'; readonly id?: string; readonly msgId: string }
  | { readonly op: 'reply'; readonly id?: string; readonly data: unknown }
  | { readonly op: 'pong'; readonly id?: string }
  | ({ readonly op: 'error'; readonly id?: string } & WireError);
