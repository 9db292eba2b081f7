/**
 * Span attribute names: the OpenTelemetry messaging, HTTP and error semantic conventions
 * (https://opentelemetry.io/docs/specs/semconv/messaging/), plus agentbus's own under
 * `messaging.agentbus.`. Kept here rather than taken from `@opentelemetry/semantic-conventions`,
 * whose messaging names are still incubating (and not a dependency of the gateway).
 */
export const SPAN_ATTRIBUTES = Object.freeze({
  messagingSystem: 'messaging.system',
  operationType: 'messaging.operation.type',
  operationName: 'messaging.operation.name',
  destinationName: 'messaging.destination.name',
  subscriptionName: 'messaging.destination.subscription.name',
  messageId: 'messaging.message.id',
  conversationId: 'messaging.message.conversation_id',
  consumerGroup: 'messaging.consumer.group.name',
  batchCount: 'messaging.batch.message_count',
  attempt: 'messaging.agentbus.attempt',
  transport: 'messaging.agentbus.transport',
  settlement: 'messaging.agentbus.settlement',
  deadLetterReason: 'messaging.agentbus.dead_letter_reason',
  errorType: 'error.type',
  httpMethod: 'http.request.method',
  httpRoute: 'http.route',
  httpStatus: 'http.response.status_code',
  urlPath: 'url.path',
  urlScheme: 'url.scheme',
  userAgent: 'user_agent.original',
  clientAddress: 'client.address',
});

/** `messaging.system` of agentbus spans. */
export const MESSAGING_SYSTEM = 'agentbus';

/**
 * `messaging.operation.type` values. The conventions renamed `publish` to `send` (semconv 1.28);
 * `messaging.operation.name` keeps agentbus's own word, `publish`.
 */
export const MESSAGING_OPERATION = Object.freeze({ send: 'send', process: 'process' });
