/**
 * agentbus, batteries included: the core API, the embedded SQLite transport,
 * `openTransport(url)` to pick a backend by URL, and the configuration loader of `agentbus serve`.
 */
export * from '@agentbus/core';
export * from '@agentbus/sqlite';
export { CONFIG_ENV, type ConfigLayer, type EnvMapping } from './config/config-layers.js';
export {
  type AgentbusConfig,
  type AuthConfig,
  CONFIG_DEFAULTS,
  CONFIG_FILE_ENV,
  DEFAULT_CONFIG_FILE,
  type JwtAuthConfig,
  type JwtKeyConfig,
  LOG_LEVELS,
  type LogLevel,
  type RedisConfig,
  type WsConfig,
} from './config/config-types.js';
export { gatewayAuthOf, redactedConfig } from './config/gateway-auth-config.js';
export { type ConfigFlags, type LoadConfigInput, type LoadedConfig, loadConfig } from './config/load-config.js';
export { validateConfig } from './config/validate-config.js';
export {
  benchSchemeOf,
  DEFAULT_TRANSPORT_URL,
  type OpenTransportOptions,
  openTransport,
  parseTransportUrl,
  SUPPORTED_TRANSPORT_URLS,
  type TransportUrl,
} from './open-transport.js';
