import { randomUUID } from 'node:crypto';
import {
  type Bus,
  BusError,
  type BusSubscription,
  errorFromWire,
  HandlerError,
  type SagaRequester,
  TimeoutError,
  type WireError,
} from '@agentbus/core';

/** What {@link servePubSub} publishes to a request's `replyto`. */
interface PubSubReply {
  readonly ok: boolean;
  readonly data?: unknown;
  readonly error?: WireError;
}

/**
 * A SagaRequester over plain publish/subscribe, for tests of the orchestrator's `requester`
 * option: a request carries `replyto` (this requester's inbox topic) and a `correlationid`; the
 * reply is matched by it. `bus.request` is the real thing.
 */
export async function pubSubRequester(
  bus: Bus,
  inbox: string,
): Promise<{ readonly requester: SagaRequester; readonly requests: () => number; close(): Promise<void> }> {
  const pending = new Map<string, (reply: PubSubReply) => void>();
  let sent = 0;
  const sub = await bus.subscribe<PubSubReply>(inbox, (d) => {
    const id = d.envelope.correlationid;
    if (id !== undefined) pending.get(id)?.(d.data);
  });
  const requester: SagaRequester = (topic, data, { timeoutMs, signal, workflowid }) =>
    new Promise((resolve, reject) => {
      const id = randomUUID();
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener('abort', onAbort);
        pending.delete(id);
      };
      const onAbort = () => {
        done();
        reject(signal.reason);
      };
      const timer = setTimeout(() => {
        done();
        reject(new TimeoutError(`no reply to ${topic} within ${timeoutMs} ms`));
      }, timeoutMs);
      signal.addEventListener('abort', onAbort, { once: true });
      pending.set(id, (reply) => {
        done();
        if (reply.ok) resolve(reply.data);
        else reject(errorFromWire(reply.error as WireError));
      });
      sent++;
      bus.publish(topic, data, { replyto: inbox, correlationid: id, workflowid }).catch((err: unknown) => {
        done();
        reject(err);
      });
    });
  return { requester, requests: () => sent, close: () => sub.close() };
}

/** Answers requests of {@link pubSubRequester} on `pattern` with the handler's result, or its error. */
export function servePubSub<T>(
  bus: Bus,
  pattern: string,
  handler: (data: T, workflowid: string | undefined) => unknown,
): Promise<BusSubscription> {
  return bus.subscribe<T>(pattern, async (d) => {
    let reply: PubSubReply;
    try {
      reply = { ok: true, data: await handler(d.data, d.envelope.workflowid) };
    } catch (err) {
      const e = err instanceof BusError ? err : new HandlerError(String((err as Error)?.message ?? err));
      reply = { ok: false, error: e.toWire() };
    }
    const { replyto, correlationid } = d.envelope;
    if (replyto) await bus.publish(replyto, reply, { correlationid: correlationid ?? d.envelope.id });
  });
}

/** A promise opened from outside: a step waits on it to stand for a step that is still running. */
export interface Gate {
  readonly promise: Promise<void>;
  /** Whether something is waiting on it (it was reached). */
  readonly reached: boolean;
  wait(): Promise<void>;
  open(): void;
}

export function gate(): Gate {
  let open!: () => void;
  const promise = new Promise<void>((r) => {
    open = r;
  });
  let reached = false;
  return {
    promise,
    get reached() {
      return reached;
    },
    wait() {
      reached = true;
      return promise;
    },
    open,
  };
}
