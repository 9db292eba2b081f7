import { BusError } from '@agentbus/core';

/**
 * An error of the WebSocket protocol itself (a bad frame, an unknown subscription …), sent to the
 * client as an `error` frame with this `code`. `data.path` names the offending field where there
 * is one.
 */
export class WsError extends BusError {
  override readonly code: string;
  override readonly retryable: boolean;
  constructor(code: string, message: string, data?: unknown, retryable = false) {
    super(message, data === undefined ? {} : { data });
    this.code = code;
    this.retryable = retryable;
  }
}

/** A frame is not an object, misses a field or has one of the wrong type (`data.path` names it). */
export function badFrame(path: string, message: string): WsError {
  return new WsError('BAD_FRAME', path === '' ? message : `${path}: ${message}`, { path });
}
