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

/** CloudEvents structured mode: `application/cloudevents+json`. The default. */
export function jsonCodec(): Codec {
  return {
    name: 'json',
    contentType: 'application/cloudevents+json',
    encode(envelope) {
      let text: string;
      try {
        text = JSON.stringify(envelope);
      } catch (cause) {
        throw new SerializationError(`cannot encode envelope as JSON: ${(cause as Error).message}`, { cause });
      }
      return Buffer.from(text, 'utf8');
    },
    decode(bytes) {
      return decodeWith(
        () => JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8')),
        'JSON',
      );
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
