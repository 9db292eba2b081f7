import { sagaRepositoryContract, sagaTransportScenario, serverSkipReason } from '@agentbus/conformance';
import { redisSagaRepository, redisTransport } from '@agentbus/redis';
import { afterAll, describe } from 'vitest';
import { deleteKeys, REDIS_URL, testPrefix } from './helpers.js';

const skipReason = await serverSkipReason('Redis', REDIS_URL, 6379);
const keyPrefix = testPrefix('saga');
afterAll(async () => {
  if (!skipReason) await deleteKeys(keyPrefix);
});

describe.skipIf(skipReason)('Redis saga repository', () => {
  sagaRepositoryContract({
    name: 'Redis',
    open: (name) => redisSagaRepository({ url: REDIS_URL, keyPrefix: `${keyPrefix}:repo:${name}` }),
    durable: true,
  });
});

sagaTransportScenario({
  name: 'Redis (sagas in Redis)',
  open: () => redisTransport({ url: REDIS_URL, keyPrefix: `${keyPrefix}:bus`, pollIntervalMs: 20 }),
  repository: () => redisSagaRepository({ url: REDIS_URL, keyPrefix: `${keyPrefix}:sagas` }),
  skipReason,
});
