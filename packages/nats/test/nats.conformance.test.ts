import { fileURLToPath } from 'node:url';
import { serverSkipReason, transportConformance } from '@agentbus/conformance';
import { natsTransport } from '@agentbus/nats';
import { afterAll } from 'vitest';
import { deleteNamespace, NATS_URL, testNamespace } from './helpers.js';

const skipReason = await serverSkipReason('NATS', NATS_URL, 4222);
const namespace = testNamespace('conformance');
afterAll(async () => {
  if (!skipReason) await deleteNamespace(namespace);
});

transportConformance({
  name: 'nats',
  // Every open() is a new connection to the same server and namespace, as a second process would have.
  // A sweep every 500 ms purges the dead letters of a killed child's ephemeral group soon.
  open: () => natsTransport({ url: NATS_URL, namespace, ephemeralSweepIntervalMs: 500 }),
  capabilities: {
    persistent: true,
    crossProcess: true,
    // JetStream has no priority order; the suite's priority test does not apply.
    priority: false,
    delayedDelivery: true,
    ttl: true,
    wildcards: true,
    deadLetterReplay: true,
  },
  methods: { routeCount: true, groupStats: true },
  childModule: fileURLToPath(new URL('./fixtures/child-transport.ts', import.meta.url)),
  childArg: JSON.stringify({ url: NATS_URL, namespace }),
  // The child's ephemeralInactiveMs (1 s) + a sweep (every 500 ms), with room to spare.
  ephemeralCrashBoundMs: 15_000,
  skipReason,
});
