import { securityAttackConformance } from '@agentbus/conformance';
import { memoryTransport } from '@agentbus/core';

securityAttackConformance({ name: 'memory', open: () => memoryTransport() });
