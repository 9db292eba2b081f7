import { createHash } from 'node:crypto';
import { Packr } from 'msgpackr';
import { type Envelope, parseEnvelope } from './envelope.js';
import { BusError, SerializationError } from './errors.js';

/** Turns envelopes into bytes and back. `decode` throws SerializationError or ValidationError. */
export interface Codec {
  readonly name: string;
  /** The MIME type written to the transport header `content-type`. */
  readonly contentType: string;
  encode(envelope: Envelope): Uint8Array;
  /**
   * Optional: encodes several envelopes at once (publishBatch), e.g. into one allocation.
   * Must give the same bytes as `encode` one by one.
   */
  encodeMany?(envelopes: readonly Envelope[]): Uint8Array[];
  decode(bytes: Uint8Array): Envelope;
}

function decodeWith(parse: () => unknown, codec: string): Envelope {
  let value: unknown;
  try {
    value = parse();
  } catch (cause) {
    throw new SerializationError(`cannot decode ${codec} envelope: ${(cause as Error).message}`, { cause });
  }
  return parseEnvelope(value);
}

function toJson(envelope: Envelope): string {
  try {
    return JSON.stringify(envelope);
  } catch (cause) {
    throw new SerializationError(`cannot encode envelope as JSON: ${(cause as Error).message}`, { cause });
  }
}

function utf8Text(bytes: Uint8Array): string {
  const buf = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return buf.toString('utf8');
}

/** CloudEvents structured mode: `application/cloudevents+json`. The default. */
export function jsonCodec(): Codec {
  return {
    name: 'json',
    contentType: 'application/cloudevents+json',
    encode(envelope) {
      return Buffer.from(toJson(envelope), 'utf8');
    },
    encodeMany(envelopes) {
      // One allocation for the batch instead of one per message: the bodies are views of it
      // and share its lifetime, like Node's own 8 KiB buffer pool but sized to the batch.
      const n = envelopes.length;
      const texts: string[] = new Array(n);
      const sizes: number[] = new Array(n);
      let total = 0;
      for (let i = 0; i < n; i++) {
        const text = toJson(envelopes[i] as Envelope);
        const size = Buffer.byteLength(text, 'utf8');
        texts[i] = text;
        sizes[i] = size;
        total += size;
      }
      const slab = Buffer.allocUnsafe(total);
      const out: Uint8Array[] = new Array(n);
      let offset = 0;
      for (let i = 0; i < n; i++) {
        const size = sizes[i] as number;
        slab.write(texts[i] as string, offset, size, 'utf8');
        out[i] = slab.subarray(offset, offset + size);
        offset += size;
      }
      return out;
    },
    decode(bytes) {
      return decodeWith(() => JSON.parse(utf8Text(bytes)), 'JSON');
    },
  };
}

/** MessagePack (msgpackr), smaller and faster for binary-heavy payloads. */
export function msgpackCodec(): Codec {
  const packr = new Packr({ useRecords: false, moreTypes: false });
  return {
    name: 'msgpack',
    contentType: 'application/cloudevents+msgpack',
    encode(envelope) {
      try {
        return packr.pack(envelope);
      } catch (cause) {
        throw new SerializationError(`cannot encode envelope as MessagePack: ${(cause as Error).message}`, { cause });
      }
    },
    decode(bytes) {
      return decodeWith(() => packr.unpack(bytes), 'MessagePack');
    },
  };
}

/** Looks a codec up by name (`json`, `msgpack`). */
export function codecByName(name: string): Codec {
  if (name === 'json') return jsonCodec();
  if (name === 'msgpack') return msgpackCodec();
  throw new BusError(`unknown codec ${name}`);
}

/** `sha256:<hex>` of the encoded bytes, for provenance and audit records. */
export function payloadDigest(bytes: Uint8Array): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}
