import type { ConnectionInfo, ConnectionRegistry } from '../context.js';
import type { WsConnection } from './ws-connection.js';
import { WS_CLOSE, WS_LIMITS } from './ws-protocol.js';

/**
 * The gateway's open WebSocket connections. Two shared timers serve them all: one checks every
 * socket's token for expiry and revocation every 250 ms (so a socket is closed within a second),
 * one pings every `pingIntervalMs` and drops clients that missed two pongs or stay over their
 * send buffer. Both are unref'd and stop with {@link closeAll}.
 */
export class WsConnectionRegistry implements ConnectionRegistry {
  readonly #connections = new Set<WsConnection>();
  readonly #authTimer: NodeJS.Timeout;
  readonly #pingTimer: NodeJS.Timeout;
  #closing: Promise<void> | undefined;

  constructor(pingIntervalMs: number) {
    this.#authTimer = setInterval(() => {
      const now = Date.now();
      for (const c of this.#connections) c.checkAuth(now);
    }, WS_LIMITS.authCheckIntervalMs);
    this.#authTimer.unref();
    this.#pingTimer = setInterval(() => {
      for (const c of this.#connections) c.heartbeat();
    }, pingIntervalMs);
    this.#pingTimer.unref();
  }

  get size(): number {
    return this.#connections.size;
  }

  /** Whether the gateway is shutting down (new sockets are turned away). */
  get closing(): boolean {
    return this.#closing !== undefined;
  }

  /** Tracks `conn` until its socket closed and its subscriptions are released. */
  add(conn: WsConnection): void {
    this.#connections.add(conn);
    void conn.released.finally(() => this.#connections.delete(conn));
  }

  /** The open connections themselves (operators and tests). */
  open(): WsConnection[] {
    return [...this.#connections];
  }

  list(): ConnectionInfo[] {
    return [...this.#connections].map((c) => c.info());
  }

  /**
   * Stops the timers and closes every socket with 1001 `reason`; resolves once they are closed and
   * their unsettled deliveries released (sockets that do not answer are cut after a second).
   */
  closeAll(reason: string): Promise<void> {
    this.#closing ??= (async () => {
      clearInterval(this.#authTimer);
      clearInterval(this.#pingTimer);
      const open = [...this.#connections];
      for (const c of open) c.close(WS_CLOSE.goingAway, reason);
      let timer: NodeJS.Timeout | undefined;
      const limit = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, WS_LIMITS.closeAllTimeoutMs);
        timer.unref();
      });
      await Promise.race([Promise.all(open.map((c) => c.released)), limit]);
      clearTimeout(timer);
    })();
    return this.#closing;
  }
}
