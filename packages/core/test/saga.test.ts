import { sagaBehaviourTests, sagaRepositoryContract } from '@agentbus/conformance';
import { memorySagaRepository, memoryTransport, type SagaRepository } from '@agentbus/core';

sagaRepositoryContract({ name: 'memory', open: () => memorySagaRepository(), durable: false });

// One repository per test: a second orchestrator (a "restarted process") shares the instance.
const repositories = new Map<string, SagaRepository>();
sagaBehaviourTests({
  name: 'memory',
  transport: () => memoryTransport(),
  repository: (name) => {
    const r = repositories.get(name) ?? memorySagaRepository();
    repositories.set(name, r);
    return r;
  },
});
