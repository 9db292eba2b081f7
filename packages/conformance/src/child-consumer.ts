/**
 * A consumer run in a child process by the crash tests, so that it can be SIGKILLed.
 * argv: <module> <arg> <pattern> <group> <ackTimeoutMs> <prefetch> <mode: hold|ack>
 * Prints one JSON line `{"id","attempt"}` per delivery; in `ack` mode it acks only once that line
 * has reached the pipe. A write to a full pipe is queued inside this process, and a SIGKILL then
 * loses the line while the ack went through: the test would count an acked message as never
 * processed (it did, under a loaded CI run, when the parent read the pipe late).
 */
import { pathToFileURL } from 'node:url';
import type { Transport } from '@agentbus/core';

const [moduleRef, arg, pattern, group, ackTimeoutMs, prefetch, mode] = process.argv.slice(2);
if (!moduleRef || arg === undefined || !pattern || !group || !mode) {
  process.stderr.write('usage: child-consumer <module> <arg> <pattern> <group> <ackTimeoutMs> <prefetch> <hold|ack>\n');
  process.exit(2);
}
const url = moduleRef.startsWith('file:') ? moduleRef : pathToFileURL(moduleRef).href;
const mod = (await import(url)) as { createTransport(arg: string): Transport | Promise<Transport> };
const transport = await mod.createTransport(arg);
await transport.connect();
const sub = await transport.subscribe(pattern, {
  group,
  prefetch: Number(prefetch),
  ackTimeoutMs: Number(ackTimeoutMs),
});
process.stdout.write(`${JSON.stringify({ ready: true })}\n`);
const print = (line: string) =>
  new Promise<void>((resolve, reject) => {
    process.stdout.write(line, (err) => (err ? reject(err) : resolve()));
  });
for await (const d of sub) {
  const line = `${JSON.stringify({ id: d.message.id, attempt: d.attempt })}\n`;
  if (mode === 'ack') {
    await print(line);
    await d.ack();
  } else process.stdout.write(line);
}
