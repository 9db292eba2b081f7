import { randomUUID } from 'node:crypto';
import { UnauthorizedError, type WireError } from '@agentbus/core';
import type { WebSocket } from 'ws';
import type { Caller } from '../auth.js';
import type { ConnectionInfo, GatewayContext } from '../context.js';
import { toWireError } from '../http-errors.js';
import { FrameRateLimiter } from './frame-rate-limiter.js';
import { WsError } from './ws-error.js';
import { type ClientFrame, parseFrame } from './ws-frame-parser.js';
import { runOperation } from './ws-operations.js';
import { type ServerFrame, WS_CLOSE, WS_CLOSE_REASON, WS_LIMITS } from './ws-protocol.js';
import type { DeliveryLink, PendingDelivery, WsSubscription } from './ws-subscription.js';

/** How the socket was authenticated at the upgrade (query token or `Authorization` header). */
export interface UpgradeAuth {
  readonly caller?: Caller;
  readonly error?: unknown;
}

/**
 * One WebSocket client: parses and rate-limits its frames, runs them (ws-operations.ts), sends
 * answers and deliveries with backpressure, and releases its subscriptions when it goes away.
 */
export class WsConnection implements DeliveryLink {
  readonly id = randomUUID();
  readonly ctx: GatewayContext;
  readonly socket: WebSocket;
  readonly remoteAddress: string;
  readonly connectedAtMs = Date.now();
  readonly subscriptions = new Map<string, WsSubscription>();
  /** Aborted when the connection goes away: its requests stop waiting. */
  readonly #gone = new AbortController();
  readonly #limiter: FrameRateLimiter;
  /** Deliveries whose settle frame is on its way (exempt from the limits once each). */
  readonly #settling = new Set<string>();
  /** Subscribes in progress (counted against the subscription limit before they complete). */
  subscriptionsOpening = 0;
  readonly #sendLimitBytes: number;
  readonly #waiters: ((ok: boolean) => void)[] = [];
  readonly #released: Promise<void>;
  #caller: Caller | undefined;
  #authenticating: Promise<void> | undefined;
  #framesIn = 0;
  #framesOut = 0;
  #pendingOps = 0;
  #subSeq = 0;
  #closed = false;
  #missedPongs = 0;
  #overLimitTicks = 0;
  #killTimer: NodeJS.Timeout | undefined;

  constructor(ctx: GatewayContext, socket: WebSocket, remoteAddress: string, upgrade: UpgradeAuth) {
    this.ctx = ctx;
    this.socket = socket;
    this.remoteAddress = remoteAddress;
    const { ws } = ctx.options;
    this.#limiter = new FrameRateLimiter(ws.ratePerSecond, ws.rateBurst);
    this.#sendLimitBytes = ws.sendBufferBytes;
    this.#released = new Promise<void>((resolve) => {
      socket.once('close', () => {
        this.#closed = true;
        clearTimeout(this.#killTimer);
        this.#gone.abort(new WsError('CLOSED', 'the WebSocket connection closed'));
        this.#wakeWaiters(false);
        resolve(this.#releaseSubscriptions());
      });
    });
    socket.on('message', (data, isBinary) => this.#onMessage(data as Buffer, isBinary));
    socket.on('pong', () => {
      this.#missedPongs = 0;
    });
    if (upgrade.error !== undefined) this.#refuse(undefined, upgrade.error);
    else this.#caller = upgrade.caller;
  }

  get caller(): Caller | undefined {
    return this.#caller;
  }

  set caller(caller: Caller) {
    this.#caller = caller;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Aborted when the connection goes away. */
  get signal(): AbortSignal {
    return this.#gone.signal;
  }

  /** Resolves once the socket closed and its subscriptions are released. */
  get released(): Promise<void> {
    return this.#released;
  }

  /** The id of the next subscription of this connection. */
  nextSubscriptionId(): string {
    return `s${++this.#subSeq}`;
  }

  info(): ConnectionInfo {
    return {
      id: this.id,
      subject: this.#caller?.principal.subject ?? '',
      remoteAddress: this.remoteAddress,
      connectedAtMs: this.connectedAtMs,
      subscriptions: [...this.subscriptions.values()].map((s) => s.info),
      framesIn: this.#framesIn,
      framesOut: this.#framesOut,
      bufferedBytes: this.socket.bufferedAmount,
    };
  }

  /** Sends a frame; past twice the send buffer limit the client is dropped as a slow consumer. */
  send(frame: ServerFrame): void {
    if (this.#closed || this.socket.readyState !== this.socket.OPEN) return;
    const text = JSON.stringify(frame);
    this.#framesOut++;
    this.socket.send(text, this.#onSent);
    // What was queued before this frame decides: one frame bigger than the headroom is no sign of
    // a slow reader (deliveries wait for ready(); other frames are small).
    if (this.socket.bufferedAmount - Buffer.byteLength(text) > 2 * this.#sendLimitBytes) this.slowConsumer();
  }

  sendError(id: string | undefined, err: unknown): void {
    const wire: WireError = toWireError(err);
    if (wire.code === 'INTERNAL') this.ctx.log.error({ err, connection: this.id }, 'websocket frame failed');
    this.send({ op: 'error', ...(id === undefined ? {} : { id }), ...wire });
  }

  readonly #onSent = (): void => {
    if (this.#waiters.length > 0 && this.socket.bufferedAmount <= this.#sendLimitBytes) this.#wakeWaiters(true);
  };

  ready(): boolean | Promise<boolean> {
    if (this.#closed) return false;
    if (this.socket.bufferedAmount <= this.#sendLimitBytes) return true;
    return new Promise<boolean>((resolve) => this.#waiters.push(resolve));
  }

  #wakeWaiters(ok: boolean): void {
    for (const w of this.#waiters.splice(0)) w(ok);
  }

  /**
   * Whether `frame` is the first ack, nack or dead-letter of a delivery this connection holds; it
   * is then claimed, so another settle of it arriving before this one runs is an ordinary frame.
   * Never while an auth frame is being verified (frames then wait, and must be counted).
   */
  #settlesHeldDelivery(frame: ClientFrame | undefined): boolean {
    if (frame === undefined || (frame.op !== 'ack' && frame.op !== 'nack' && frame.op !== 'deadLetter')) return false;
    if (this.#authenticating !== undefined || this.#settling.has(frame.delivery)) return false;
    if (this.delivery(frame.delivery, false) === undefined) return false;
    this.#settling.add(frame.delivery);
    return true;
  }

  /** The unsettled delivery `id` of any subscription of this connection (removed when `take`). */
  delivery(id: string, take: boolean): PendingDelivery | undefined {
    const sub = this.subscriptions.get(id.slice(0, id.lastIndexOf(':')));
    return take ? sub?.take(id) : sub?.peek(id);
  }

  /** Closes with a close frame; a peer that does not answer within a second is cut. */
  close(code: number, reason: string): void {
    if (this.#closed) return;
    if (this.#killTimer === undefined) {
      this.#killTimer = setTimeout(() => this.socket.terminate(), WS_LIMITS.closeGraceMs);
      this.#killTimer.unref();
    }
    try {
      this.socket.close(code, reason);
    } catch {
      this.socket.terminate();
    }
  }

  slowConsumer(): void {
    this.ctx.log.warn({ connection: this.id, bufferedBytes: this.socket.bufferedAmount }, 'slow websocket consumer');
    this.close(WS_CLOSE.slowConsumer, WS_CLOSE_REASON.slowConsumer);
  }

  /**
   * Called by the registry's shared timer (every 250 ms): closes the socket once its token expired
   * or was revoked, or when it stayed unauthenticated too long.
   */
  checkAuth(nowMs: number): void {
    if (this.#closed) return;
    const caller = this.#caller;
    if (caller === undefined) {
      // Also while an auth frame is being verified: a verification that hangs must not keep an
      // unauthenticated socket open.
      if (nowMs - this.connectedAtMs > WS_LIMITS.authTimeoutMs)
        this.close(WS_CLOSE.unauthorized, WS_CLOSE_REASON.authTimeout);
      return;
    }
    if (caller.expiresAtMs !== undefined && nowMs >= caller.expiresAtMs)
      this.close(WS_CLOSE.unauthorized, WS_CLOSE_REASON.tokenExpired);
    else if (caller.token !== undefined) {
      const p = caller.principal as { subject: string; claims?: { jti?: unknown } };
      if (this.ctx.auth.isRevoked(p.subject, p.claims?.jti))
        this.close(WS_CLOSE.unauthorized, WS_CLOSE_REASON.tokenRevoked);
    }
  }

  /**
   * Called by the registry every `pingIntervalMs`: drops a client that missed two pongs, or whose
   * send buffer stayed over its limit for a whole interval (a slow consumer that holds deliveries).
   */
  heartbeat(): void {
    if (this.#closed) return;
    if (this.#missedPongs >= 2) {
      this.socket.terminate();
      return;
    }
    if (this.socket.bufferedAmount > this.#sendLimitBytes) {
      if (++this.#overLimitTicks >= 2) {
        this.slowConsumer();
        return;
      }
    } else {
      this.#overLimitTicks = 0;
      if (this.#waiters.length > 0) this.#wakeWaiters(true);
    }
    this.#missedPongs++;
    try {
      this.socket.ping();
    } catch {
      // the socket is closing; its close event releases it
    }
  }

  /** An error frame, then close 4401: authentication failed or was never attempted. */
  #refuse(id: string | undefined, err: unknown): void {
    this.sendError(id, err);
    this.close(WS_CLOSE.unauthorized, WS_CLOSE_REASON.unauthorized);
  }

  #onMessage(data: Buffer, isBinary: boolean): void {
    if (this.#closed) return;
    this.#framesIn++;
    const unauthenticated = this.#caller === undefined && this.#authenticating === undefined;
    const parsed = isBinary ? undefined : parseFrame(data.toString('utf8'));
    // Settling a delivery this connection holds costs no token and does not count as a frame in
    // progress: those frames are bounded by the subscriptions' prefetch, and refusing them would
    // leave the deliveries held (and redelivered later) and throttle consumption itself.
    const heldSettle = this.#settlesHeldDelivery(parsed?.frame);
    if (!heldSettle) {
      const retryAfterMs = this.#limiter.take();
      if (retryAfterMs > 0) {
        this.sendError(parsed?.id, new WsError('RATE_LIMITED', 'too many frames', { retryAfterMs }, true));
        return;
      }
    }
    if (parsed === undefined) {
      const err = new WsError('BAD_FRAME', 'binary frames are not supported: send JSON text frames', { path: '' });
      if (unauthenticated) this.#refuse(undefined, new UnauthorizedError('authenticate first'));
      else this.sendError(undefined, err);
      return;
    }
    if (unauthenticated && parsed.frame?.op !== 'auth') {
      this.#refuse(
        parsed.id,
        new UnauthorizedError('authenticate first: send an auth frame', { data: parsed.error?.toWire() }),
      );
      return;
    }
    if (parsed.error !== undefined || parsed.frame === undefined) {
      this.sendError(parsed.id, parsed.error);
      return;
    }
    if (!heldSettle && this.#pendingOps >= WS_LIMITS.maxPendingOps) {
      this.sendError(
        parsed.id,
        new WsError(
          'RATE_LIMITED',
          `at most ${WS_LIMITS.maxPendingOps} frames in progress`,
          { retryAfterMs: 100 },
          true,
        ),
      );
      return;
    }
    if (heldSettle) {
      const delivery = (parsed.frame as { delivery: string }).delivery;
      void this.#run(parsed.frame).finally(() => this.#settling.delete(delivery));
      return;
    }
    this.#pendingOps++;
    void this.#run(parsed.frame).finally(() => {
      this.#pendingOps--;
    });
  }

  async #run(frame: ClientFrame): Promise<void> {
    try {
      if (frame.op === 'auth') {
        await this.#auth(frame);
        return;
      }
      if (this.#authenticating !== undefined) await this.#authenticating;
      if (this.#closed) return;
      if (this.#caller === undefined) {
        this.#refuse(frame.id, new UnauthorizedError('authenticate first: send an auth frame'));
        return;
      }
      await runOperation(this, this.#caller, frame);
    } catch (err) {
      this.sendError(frame.id, err);
    }
  }

  async #auth(frame: Extract<ClientFrame, { op: 'auth' }>): Promise<void> {
    if (this.#authenticating !== undefined) await this.#authenticating;
    const attempt = this.ctx.auth.authenticate(frame.token);
    this.#authenticating = attempt.then(
      () => {},
      () => {},
    );
    let caller: Caller;
    try {
      caller = await attempt;
    } catch (err) {
      this.#refuse(frame.id, err);
      return;
    } finally {
      this.#authenticating = undefined;
    }
    const previous = this.#caller;
    if (
      previous !== undefined &&
      (previous.principal.subject !== caller.principal.subject || previous.principal.tenant !== caller.principal.tenant)
    )
      throw new WsError('FORBIDDEN', 'a connection keeps the subject it authenticated as', {
        subject: previous.principal.subject,
      });
    this.#caller = caller;
    this.send({
      op: 'authenticated',
      ...(frame.id === undefined ? {} : { id: frame.id }),
      subject: caller.principal.subject,
      ...(caller.expiresAtMs === undefined ? {} : { expiresAtMs: caller.expiresAtMs }),
    });
  }

  async #releaseSubscriptions(): Promise<void> {
    const subs = [...this.subscriptions.values()];
    this.subscriptions.clear();
    await Promise.all(
      subs.map((s) =>
        s
          .close()
          .catch((err: unknown) => this.ctx.log.warn({ err, connection: this.id }, 'releasing a subscription failed')),
      ),
    );
  }
}
