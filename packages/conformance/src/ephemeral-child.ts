/**
 * An ephemeral subscriber run in a child process by the conformance suite, so that it can be
 * SIGKILLed while its group holds a message and a dead letter.
 * argv: <module> <arg> <topic> <group> <ackTimeoutMs>
 * Prints `{"ready":true}` once subscribed; dead-letters the first delivery and holds the others,
 * printing `{"id","attempt"}` for each once it is dead-lettered or held.
 */
import { pathToFileURL } from 'node:url';
import type { Transport } from '@agentbus/core';

const [moduleRef, arg, topic, group, ackTimeoutMs] = process.argv.slice(2);
if (!moduleRef || arg === undefined || !topic || !group || !ackTimeoutMs) {
  process.stderr.write('usage: ephemeral-child <module> <arg> <topic> <group> <ackTimeoutMs>\n');
  process.exit(2);
}
const url = moduleRef.startsWith('file:') ? moduleRef : pathToFileURL(moduleRef).href;
const mod = (await import(url)) as { createTransport(arg: string): Transport | Promise<Transport> };
const transport = await mod.createTransport(arg);
await transport.connect();
const sub = await transport.subscribe(topic, {
  group,
  prefetch: 10,
  ackTimeoutMs: Number(ackTimeoutMs),
  ephemeral: true,
});
process.stdout.write(`${JSON.stringify({ ready: true })}\n`);
let first = true;
for await (const d of sub) {
  if (first) {
    first = false;
    await d.deadLetter('poison', { error: 'ephemeral child' });
  } else {
    // Keeps the lease while it waits to be killed, as a running handler would.
    setInterval(() => void d.extend(Number(ackTimeoutMs)), Number(ackTimeoutMs) / 4);
  }
  process.stdout.write(`${JSON.stringify({ id: d.message.id, attempt: d.attempt })}\n`);
}
