import { assertTopic, type PublishItem, type PublishOptions } from '@agentbus/core';
import type { Command } from 'commander';
import { header, parseJsonArgument, positiveInt, priority, readStdin } from '../arguments.js';
import { type CliContext, connectBus, transportUrlOf } from '../context.js';
import { publishSecurity } from '../security/command-security.js';

/** Defaults of `agentbus publish`. */
export const PUBLISH_DEFAULTS = Object.freeze({
  source: 'agentbus-cli',
  count: 1,
  /** `--count` copies go out in batches of this many (one transport round each). */
  batchSize: 100,
});

interface PublishFlags {
  readonly source: string;
  readonly priority?: number;
  readonly ttlMs?: number;
  readonly header?: Record<string, string>;
  readonly count: number;
  readonly json?: boolean;
}

/** `agentbus publish <topic> <json>`: publishes an event and prints its id. */
export function registerPublishCommand(program: Command, ctx: CliContext): void {
  program
    .command('publish')
    .description(
      'publish an event; prints the envelope id (one per line with --count); signs it with --keyring and ' +
        'checks it against --verify-config first',
    )
    .argument('<topic>', 'concrete topic, e.g. tasks.summarise')
    .argument('<json>', "the event data as JSON, or '-' to read it from stdin")
    .option('--source <agent>', 'the sending agent (CloudEvents source)', PUBLISH_DEFAULTS.source)
    .option('--priority <0-9>', 'delivery priority, higher first', priority)
    .option('--ttl-ms <ms>', 'dead-letter as expired if not delivered within this time', positiveInt)
    .option('--header <k=v>', 'a free header; repeat for more', header)
    .option('--count <n>', 'publish this many copies', positiveInt, PUBLISH_DEFAULTS.count)
    .option('--json', 'print each published envelope as a JSON line instead of its id')
    .action(async (topic: string, json: string, flags: PublishFlags, command: Command) => {
      // Bad input is refused before the transport is opened (which may create a database file).
      assertTopic(topic);
      const data = parseJsonArgument(json === '-' ? await readStdin() : json, '<json>');
      const options: PublishOptions = {
        source: flags.source,
        ...(flags.priority === undefined ? {} : { priority: flags.priority }),
        ...(flags.ttlMs === undefined ? {} : { ttlMs: flags.ttlMs }),
        ...(flags.header === undefined ? {} : { headers: flags.header }),
      };
      const security = await publishSecurity(command, ctx.out);
      const url = transportUrlOf(command);
      const bus = await connectBus(ctx, url, { source: flags.source, middleware: security.middleware });
      for (let sent = 0; sent < flags.count; sent += PUBLISH_DEFAULTS.batchSize) {
        const n = Math.min(PUBLISH_DEFAULTS.batchSize, flags.count - sent);
        const items: PublishItem[] = Array.from({ length: n }, () => ({ topic, data, options }));
        const envelopes = n === 1 ? [await bus.publish(topic, data, options)] : await bus.publishBatch(items);
        for (const env of envelopes) ctx.out.line(flags.json ? JSON.stringify(env) : env.id);
      }
      if (!bus.transport.capabilities.persistent) {
        ctx.out.note(`note: ${url} keeps messages in this process only; they are gone when it exits`);
      }
    });
}
