import { serverSkipReason, until } from '@agentbus/conformance';
import { createBus, silentLogger } from '@agentbus/core';
import { natsTransport } from '@agentbus/nats';
import { DiscardPolicy, jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { afterAll, describe, expect, it } from 'vitest';
import { deleteNamespace, NATS_URL, testNamespace } from './helpers.js';

const namespace = testNamespace('dlretry');
const skipReason = await serverSkipReason('NATS', NATS_URL, 4222);

describe.skipIf(skipReason)('NATS: dead-lettering that fails', () => {
  afterAll(() => deleteNamespace(namespace));

  it('is tried again on the next delivery until it succeeds: JetStream never gives up on the message', async () => {
    // A short publish timeout: the full stream does not answer, so each dead-lettering times out.
    const transport = natsTransport({ url: NATS_URL, namespace, publishTimeoutMs: 1_000 });
    const bus = createBus({ transport, logger: silentLogger });
    const nc = await connect({ servers: NATS_URL });
    try {
      const jsm = await jetstreamManager(nc);
      let handled = 0;
      await bus.subscribe(
        'dlr.job',
        () => {
          handled++;
          throw new Error('the model call failed');
        },
        { group: 'workers', maxAttempts: 1, ackTimeoutMs: 300 },
      );
      // The dead-letter stream is full and refuses new messages (a limit an operator set, a disk
      // that filled): every dead-lettering fails for now.
      const dlq = transport.names.deadLetterStream;
      const original = (await jsm.streams.info(dlq)).config;
      await nc.request(`${namespace}.dlq.filler.x`, new Uint8Array(1));
      await jsm.streams.update(dlq, { ...original, max_msgs: 1, discard: DiscardPolicy.New });
      const sent = await bus.publish('dlr.job', { n: 1 });

      // Delivery 1 fails in the handler and its dead-lettering fails; delivery 2 (past
      // maxAttempts) goes straight to the dead-lettering, which fails again. A JetStream limit of
      // maxAttempts + 1 deliveries ended it there, with the message in no queue and no DLQ.
      const consumer = transport.names.consumer('workers');
      await until(
        async () => (await jsm.consumers.info(transport.names.stream, consumer)).delivered.consumer_seq >= 4,
        15_000,
        'a fourth delivery of the message',
      );
      expect(handled).toBe(1);
      await jsm.streams.update(dlq, { ...original, max_msgs: -1 });
      await until(
        async () => (await transport.deadLetters.list({ group: 'workers' })).some((d) => d.message.id === sent.id),
        15_000,
        'the message in the dead-letter store',
      );
      const [record] = (await transport.deadLetters.list({ group: 'workers' })).filter((d) => d.message.id === sent.id);
      expect(record?.reason).toBe('max-attempts');
    } finally {
      await nc.close();
      await bus.close();
    }
  });
});
