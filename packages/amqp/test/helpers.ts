import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import amqp from 'amqplib';

export const AMQP_URL = process.env.AGENTBUS_AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';

/** A namespace of its own per test file, so runs never see each other's queues. */
export function testNamespace(name: string): string {
  return `abtest.${name}.${randomBytes(4).toString('hex')}`;
}

const run = promisify(execFile);

/**
 * Deletes every queue and exchange whose name starts with `namespace` (after the tests). AMQP
 * cannot list queues, and the broker here has no management plugin: rabbitmqctl lists them.
 */
export async function deleteNamespace(namespace: string, url = AMQP_URL): Promise<void> {
  const list = async (what: 'list_queues' | 'list_exchanges') => {
    const { stdout } = await run('rabbitmqctl', ['-q', what, 'name'], { timeout: 30_000 });
    return stdout
      .split('\n')
      .map((l) => l.trim())
      .filter((n) => n === namespace || n.startsWith(`${namespace}.`));
  };
  const [queues, exchanges] = await Promise.all([list('list_queues'), list('list_exchanges')]);
  const conn = await amqp.connect(url);
  try {
    const ch = await conn.createChannel();
    for (const q of queues) await ch.deleteQueue(q);
    for (const x of exchanges) await ch.deleteExchange(x);
    await ch.close();
  } finally {
    await conn.close();
  }
}
