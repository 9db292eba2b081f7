import { payloadDigest } from './codec.js';
import type { Envelope } from './envelope.js';
import type { DeadLetterOptions, NackOptions, RawDelivery } from './transport.js';

/** The signal of a delivery no middleware gave one: never aborted. */
const NEVER = new AbortController().signal;

/** How a handler (or middleware) settled a delivery through its `Delivery`. */
export type Settlement = 'ack' | 'nack' | 'dead-letter';

/**
 * One delivery of an envelope to a handler: the event plus per-delivery state. Settling is
 * idempotent (the first call wins); a handler that neither settles nor throws is acked for it.
 */
export class Delivery<T = unknown> {
  #envelope: Envelope<T>;
  #signal: AbortSignal | undefined;
  #settledAs: Settlement | undefined;

  constructor(
    envelope: Envelope<T>,
    private readonly raw: RawDelivery,
  ) {
    this.#envelope = envelope;
  }

  /** The event, as delivered unless a middleware replaced it (see `useEnvelope`). */
  get envelope(): Envelope<T> {
    return this.#envelope;
  }

  /**
   * For middleware: the envelope the handler (and later hooks) see, e.g. one upcast to the
   * current schema version. Settling, the digest and the transport headers still concern the
   * message as delivered.
   */
  useEnvelope(envelope: Envelope<T>): void {
    this.#envelope = envelope;
  }

  /**
   * Aborted when the handler should stop (its timeout ran out, the subscription is closing …):
   * pass it to model calls and fetches. Never aborted unless a middleware set one.
   */
  get signal(): AbortSignal {
    return this.#signal ?? NEVER;
  }

  /** For middleware: the signal the handler sees (combined with one already set). */
  useSignal(signal: AbortSignal): void {
    this.#signal = this.#signal ? AbortSignal.any([this.#signal, signal]) : signal;
  }

  get data(): T {
    return this.envelope.data;
  }
  get topic(): string {
    return this.envelope.topic;
  }
  get group(): string {
    return this.raw.group;
  }
  /** 1 on the first delivery. */
  get attempt(): number {
    return this.raw.attempt;
  }
  /**
   * Why the previous attempt failed: the error of the nack that caused this redelivery, e.g.
   * `HANDLER: model call failed` (what the bus records when a handler throws), cut to
   * `LAST_ERROR_MAX_BYTES`. Undefined on the first attempt and when the previous attempt ended
   * without an error (its lease expired, its process crashed). Lets a handler adapt a retry, e.g.
   * tell the model what went wrong last time.
   */
  get lastError(): string | undefined {
    return this.raw.lastError;
  }
  get settled(): boolean {
    return this.raw.settled;
  }
  /** Transport headers as received (content-type, traceparent …). */
  get transportHeaders(): Readonly<Record<string, string>> {
    return this.raw.message.headers;
  }
  /** `sha256:<hex>` of the encoded message, for provenance and audit. */
  digest(): string {
    return payloadDigest(this.raw.message.body);
  }
  /**
   * How it was settled through this object, if it was (the first settle wins); undefined when
   * not, or when it was settled otherwise (its lease ran out).
   */
  get settledAs(): Settlement | undefined {
    return this.#settledAs;
  }
  ack(): Promise<void> {
    this.#mark('ack');
    return this.raw.ack();
  }
  nack(options?: NackOptions): Promise<void> {
    this.#mark('nack');
    return this.raw.nack(options);
  }
  deadLetter(reason: string, options?: DeadLetterOptions): Promise<void> {
    this.#mark('dead-letter');
    return this.raw.deadLetter(reason, options);
  }
  #mark(how: Settlement): void {
    if (this.#settledAs === undefined && !this.raw.settled) this.#settledAs = how;
  }
  /** Keeps the lease `ms` more from now. The bus already extends leases while a handler runs. */
  extend(ms: number): Promise<void> {
    return this.raw.extend(ms);
  }
}
