/**
 * agentbus, batteries included: the core API, the embedded SQLite transport and
 * `openTransport(url)` to pick a backend by URL.
 */
export * from '@agentbus/core';
export * from '@agentbus/sqlite';
export {
  DEFAULT_TRANSPORT_URL,
  type OpenTransportOptions,
  openTransport,
  parseTransportUrl,
  SUPPORTED_TRANSPORT_URLS,
  type TransportUrl,
} from './open-transport.js';
