import { transportConformance } from '@agentbus/conformance';
import { memoryTransport } from '@agentbus/core';

transportConformance({
  name: 'memory',
  open: () => memoryTransport(),
  capabilities: memoryTransport().capabilities,
  methods: { routeCount: true, groupStats: true },
});
