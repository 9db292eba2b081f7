import { assertPattern, type Delivery } from '@agentbus/core';
import type { Command } from 'commander';
import { duration, positiveInt } from '../arguments.js';
import { type CliContext, connectBus, transportUrlOf } from '../context.js';
import { aborted } from '../lifecycle.js';
import type { Style } from '../output.js';
import { tailSecurity } from '../security/command-security.js';
import { reloadVerifyConfigOnChange } from '../security/verify-config.js';

/** Defaults of `agentbus tail`. */
export const TAIL_DEFAULTS = Object.freeze({
  /**
   * Tail consumes in its own group, so it gets a copy of every message without stealing work
   * from the agents' groups. Only messages published after the group exists reach it.
   */
  group: 'tail',
});

interface TailFlags {
  readonly group: string;
  readonly count?: number;
  readonly json?: boolean;
  readonly maxAge?: number;
}

/** One human-readable line: time, topic, id, attempt, data. */
export function formatDeliveryLine(d: Delivery, style: Style): string {
  const env = d.envelope;
  return [style.dim(env.time), style.cyan(env.topic), env.id, `#${d.attempt}`, JSON.stringify(env.data)].join('  ');
}

/** `agentbus tail <pattern>`: prints (and acks) messages as they arrive. */
export function registerTailCommand(program: Command, ctx: CliContext): void {
  program
    .command('tail')
    .description(
      'print messages matching a pattern as they arrive, acking them in their own group; with --keyring or ' +
        '--verify-config, messages that fail are dead-lettered and reported on stderr as refused',
    )
    .argument('<pattern>', "topic pattern: '*' matches one segment, a final '>' the rest")
    .option('--group <name>', 'consumer group to read in', TAIL_DEFAULTS.group)
    .option('--count <n>', 'exit after this many messages', positiveInt)
    .option('--json', 'print each envelope as one JSON line')
    .option(
      '--max-age <duration>',
      'with a keyring: how old a signature may be on first delivery (default 5m)',
      duration,
    )
    .action(async (pattern: string, flags: TailFlags, command: Command) => {
      assertPattern(pattern);
      const security = await tailSecurity(command, ctx.out, {
        ...(flags.maxAge === undefined ? {} : { maxAgeMs: flags.maxAge }),
      });
      const url = transportUrlOf(command);
      const bus = await connectBus(ctx, url, { source: 'agentbus-tail', middleware: security.middleware });
      const limit = flags.count ?? Number.POSITIVE_INFINITY;
      let shown = 0;
      let finish!: () => void;
      const finished = new Promise<void>((resolve) => (finish = resolve));
      const sub = await bus.subscribe(
        pattern,
        async (d) => {
          if (shown >= limit) {
            // Not ours to show: hand it straight back to the group.
            await d.nack();
            return;
          }
          shown++;
          ctx.out.line(flags.json ? JSON.stringify(d.envelope) : formatDeliveryLine(d, ctx.out.style));
          if (shown >= limit) finish();
        },
        // One at a time keeps the output in delivery order and makes --count exact.
        { group: flags.group, concurrency: 1 },
      );
      if (security.verifyConfig) reloadVerifyConfigOnChange(security.verifyConfig, ctx.lifecycle, ctx.out);
      ctx.out.note(`tailing '${pattern}' in group '${flags.group}' on ${url} (Ctrl-C to stop)`);
      if (!bus.transport.capabilities.crossProcess) {
        ctx.out.note(`note: ${url} lives inside this process; other processes' messages never reach it`);
      }
      await Promise.race([finished, aborted(ctx.lifecycle.signal)]);
      await sub.close();
    });
}
