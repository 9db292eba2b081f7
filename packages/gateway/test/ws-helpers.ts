import { until } from '@agentbus/conformance';
import WebSocket from 'ws';
import type { Json } from './gateway-fixtures.js';

/** The `ws://` URL of a gateway's WebSocket endpoint. */
export function wsUrl(httpUrl: string, query = ''): string {
  return `${httpUrl.replace(/^http/, 'ws')}/v1/ws${query}`;
}

/** How a socket ended. */
export interface CloseInfo {
  readonly code: number;
  readonly reason: string;
}

/** A test client: records every frame it receives and how the socket closed. */
export class WsTestClient {
  readonly frames: Json[] = [];
  readonly closed: Promise<CloseInfo>;
  #closeInfo: CloseInfo | undefined;
  #seq = 0;

  constructor(readonly socket: WebSocket) {
    this.closed = new Promise((resolve) => {
      socket.on('close', (code, reason) => {
        this.#closeInfo = { code, reason: reason.toString() };
        resolve(this.#closeInfo);
      });
    });
    socket.on('message', (data) => {
      this.frames.push(JSON.parse(String(data)));
    });
    socket.on('error', () => {});
  }

  /** Undefined while open. */
  get closeInfo(): CloseInfo | undefined {
    return this.#closeInfo;
  }

  send(frame: unknown): void {
    this.socket.send(typeof frame === 'string' ? frame : JSON.stringify(frame));
  }

  /** Waits for a frame matching `pred` (received since the start). */
  async waitFor(pred: (f: Json) => boolean, what = 'frame', timeoutMs = 10_000): Promise<Json> {
    let found: Json;
    await until(
      () => {
        found = this.frames.find(pred);
        return found !== undefined;
      },
      timeoutMs,
      what,
    );
    return found;
  }

  /** Sends `frame` with a fresh id and resolves with the answer (or error frame) carrying that id. */
  async call(frame: Record<string, unknown>, timeoutMs = 10_000): Promise<Json> {
    const id = `c${++this.#seq}`;
    this.send({ ...frame, id });
    return this.waitFor((f) => f.id === id, `answer to ${String(frame.op)} ${id}`, timeoutMs);
  }

  /** The `message` frames received for subscription `sub`. */
  messages(sub: string): Json[] {
    return this.frames.filter((f) => f.op === 'message' && f.sub === sub);
  }

  async close(): Promise<void> {
    if (this.#closeInfo) return;
    this.socket.close();
    await Promise.race([this.closed, new Promise((r) => setTimeout(r, 2_000).unref())]);
    if (!this.#closeInfo) this.socket.terminate();
  }
}

/** Opens a socket to the gateway (rejects when the upgrade is refused). */
export async function connectWs(
  httpUrl: string,
  options: { query?: string; headers?: Record<string, string>; maxPayload?: number } = {},
): Promise<WsTestClient> {
  const socket = new WebSocket(wsUrl(httpUrl, options.query), {
    headers: options.headers ?? {},
    maxPayload: options.maxPayload ?? 100 * 1024 * 1024,
  });
  const client = new WsTestClient(socket);
  await new Promise<void>((resolve, reject) => {
    socket.once('open', () => resolve());
    socket.once('error', reject);
    socket.once('unexpected-response', (_req, res) => reject(new Error(`upgrade refused: ${res.statusCode}`)));
  });
  return client;
}

/** Tracks clients to close after each test. */
export class ClientPool {
  readonly #clients: WsTestClient[] = [];
  async open(httpUrl: string, options?: Parameters<typeof connectWs>[1]): Promise<WsTestClient> {
    const c = await connectWs(httpUrl, options);
    this.#clients.push(c);
    return c;
  }
  async closeAll(): Promise<void> {
    await Promise.all(this.#clients.splice(0).map((c) => c.close()));
  }
}
