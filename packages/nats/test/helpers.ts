import { randomBytes } from 'node:crypto';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';

export const NATS_URL = process.env.AGENTBUS_NATS_URL ?? 'nats://127.0.0.1:4222';

/** A namespace of its own per test file (one subject token), so runs never see each other's streams. */
export function testNamespace(name: string): string {
  return `abtest_${name}_${randomBytes(4).toString('hex')}`;
}

/** Deletes the namespace's streams (and with them its consumers) after the tests. */
export async function deleteNamespace(namespace: string, url = NATS_URL): Promise<void> {
  const nc = await connect({ servers: url });
  try {
    const jsm = await jetstreamManager(nc);
    for (const stream of [`AB_${namespace}`, `AB_${namespace}_DLQ`, `AB_${namespace}_ERR`]) {
      await jsm.streams.delete(stream).catch(() => false);
    }
  } finally {
    await nc.close();
  }
}
