import { sequenceStoreContract } from '@agentbus/conformance';
import { memorySequenceStore } from '@agentbus/core';

sequenceStoreContract({ name: 'memory', open: () => memorySequenceStore(), durable: false });
