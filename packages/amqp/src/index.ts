export { AmqpTransport, amqpTransport } from './amqp-transport.js';
export { AmqpNames } from './names.js';
export {
  AMQP_TRANSPORT_DEFAULTS,
  type AmqpQueueType,
  type AmqpTransportOptions,
  resolveAmqpOptions,
} from './options.js';
