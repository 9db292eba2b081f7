import type { JsonSchema } from './schema-compatibility.js';
import type { SchemaRegistry } from './schema-registry.js';

/** The schema format of exported payloads (AsyncAPI's default format is draft-07 based). */
export const ASYNCAPI_SCHEMA_FORMAT = 'application/schema+json;version=draft-2020-12';

export interface AsyncApiOptions {
  readonly info?: { readonly title?: string; readonly version?: string; readonly description?: string };
  /** The topic per message type; wins over the topic given at registration. Default: the type itself. */
  readonly topics?: Readonly<Record<string, string>>;
  /** Operations described per channel (default both: agents on a bus publish and consume). */
  readonly actions?: readonly ('send' | 'receive')[];
}

export const ASYNCAPI_DEFAULTS = Object.freeze({
  title: 'agentbus',
  version: '1.0.0',
  actions: Object.freeze(['send', 'receive'] as const),
});

export interface AsyncApiReference {
  readonly $ref: string;
}

export interface AsyncApiMessage {
  readonly name: string;
  readonly title: string;
  readonly contentType: 'application/json';
  readonly payload: AsyncApiReference;
  readonly description?: string;
  readonly 'x-schemaversion': string;
  readonly 'x-deprecated'?: true;
}

/** An AsyncAPI 3.0 document; plain JSON. */
export interface AsyncApiDocument {
  readonly asyncapi: '3.0.0';
  readonly info: { readonly title: string; readonly version: string; readonly description?: string };
  readonly defaultContentType: 'application/json';
  readonly channels: Record<string, { address: string; messages: Record<string, AsyncApiReference> }>;
  readonly operations: Record<
    string,
    { action: 'send' | 'receive'; channel: AsyncApiReference; messages: AsyncApiReference[] }
  >;
  readonly components: {
    readonly schemas: Record<string, { schemaFormat: string; schema: JsonSchema }>;
    readonly messages: Record<string, AsyncApiMessage>;
  };
}

/**
 * Describes every registered (type, version) as an AsyncAPI 3.0 document: a channel per topic
 * (address = topic), a message per type and version whose payload is its schema (in
 * `components.schemas`, as a 2020-12 multi-format schema), and a send and a receive operation per
 * channel. The payload is the CloudEvents `data` of the envelope the message travels in.
 */
export function toAsyncApi(registry: SchemaRegistry, options: AsyncApiOptions = {}): AsyncApiDocument {
  const actions = options.actions ?? ASYNCAPI_DEFAULTS.actions;
  const doc: AsyncApiDocument = {
    asyncapi: '3.0.0',
    info: {
      title: options.info?.title ?? ASYNCAPI_DEFAULTS.title,
      version: options.info?.version ?? ASYNCAPI_DEFAULTS.version,
      ...(options.info?.description !== undefined ? { description: options.info.description } : {}),
    },
    defaultContentType: 'application/json',
    channels: {},
    operations: {},
    components: { schemas: {}, messages: {} },
  };
  const channelIds = new Ids();
  const messageIds = new Ids();
  const channelOf = new Map<string, string>();
  for (const type of registry.types().sort()) {
    for (const version of registry.versions(type)) {
      const schema = registry.get(type, version);
      if (!schema) continue;
      const topic = options.topics?.[type] ?? schema.topic ?? type;
      let channelId = channelOf.get(topic);
      if (channelId === undefined) {
        channelId = channelIds.take(topic);
        channelOf.set(topic, channelId);
        doc.channels[channelId] = { address: topic, messages: {} };
      }
      const messageId = messageIds.take(`${type}.v${version}`);
      doc.components.schemas[messageId] = {
        schemaFormat: ASYNCAPI_SCHEMA_FORMAT,
        schema: structuredClone(schema.schema),
      };
      const description = [
        schema.description,
        schema.deprecated ? `Deprecated${schema.deprecationNote ? `: ${schema.deprecationNote}` : '.'}` : undefined,
      ].filter((s) => s !== undefined);
      doc.components.messages[messageId] = {
        name: type,
        title: `${type} v${version}`,
        contentType: 'application/json',
        payload: { $ref: `#/components/schemas/${messageId}` },
        ...(description.length > 0 ? { description: description.join(' ') } : {}),
        'x-schemaversion': version,
        ...(schema.deprecated ? { 'x-deprecated': true as const } : {}),
      };
      (doc.channels[channelId] as { messages: Record<string, AsyncApiReference> }).messages[messageId] = {
        $ref: `#/components/messages/${messageId}`,
      };
    }
  }
  for (const [channelId, channel] of Object.entries(doc.channels)) {
    for (const action of actions) {
      doc.operations[`${action}.${channelId}`] = {
        action,
        channel: { $ref: `#/channels/${channelId}` },
        messages: Object.keys(channel.messages).map((id) => ({ $ref: `#/channels/${channelId}/messages/${id}` })),
      };
    }
  }
  return doc;
}

/** Unique identifiers in AsyncAPI's key alphabet (`[A-Za-z0-9._-]`), suffixed where two names collide. */
class Ids {
  readonly #taken = new Set<string>();
  take(name: string): string {
    const base = name.replace(/[^A-Za-z0-9._-]/g, '_');
    let id = base;
    for (let n = 2; this.#taken.has(id); n++) id = `${base}_${n}`;
    this.#taken.add(id);
    return id;
  }
}
