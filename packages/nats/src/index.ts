export { groupToken, H as NATS_HEADERS, NatsNames } from './names.js';
export { NatsDeadLetterStore } from './nats-dead-letter-store.js';
export { NatsTransport, natsTransport } from './nats-transport.js';
export { NATS_TRANSPORT_DEFAULTS, type NatsTransportOptions, resolveNatsOptions } from './options.js';
