import type { DeadLetterFilter, Transport } from '@agentbus/core';
import type { Command } from 'commander';
import { positiveInt } from '../arguments.js';
import { NotFoundError, UsageError } from '../cli-error.js';
import { type CliContext, connectTransport, transportUrlOf } from '../context.js';
import { deadLetterDetails, deadLetterTable, viewDeadLetter } from '../dlq/dead-letter-view.js';
import { progressWanted, startProgress } from '../progress.js';

/** Defaults of the `agentbus dlq` commands. */
export const DLQ_DEFAULTS = Object.freeze({
  limit: 100,
  /**
   * With a progress bar, a bulk replay or purge first lists at most this many matching records
   * and acts on them one by one; what matches beyond goes in one bulk call after them.
   */
  progressSnapshot: 100_000,
});

interface FilterFlags {
  readonly topic?: string;
  readonly group?: string;
  readonly reason?: string;
  readonly limit?: number;
  readonly json?: boolean;
}

interface BulkFlags extends FilterFlags {
  readonly all?: boolean;
}

function withFilters(command: Command): Command {
  return command
    .option('--topic <pattern>', "original topic pattern ('*' and '>' allowed)")
    .option('--group <name>', 'consumer group that dead-lettered it')
    .option('--reason <reason>', 'e.g. max-attempts, unrecoverable, expired, decode')
    .option('--limit <n>', 'at most this many records', positiveInt)
    .option('--json', 'machine-readable output');
}

function filterOf(flags: FilterFlags, defaultLimit?: number): DeadLetterFilter {
  const limit = flags.limit ?? defaultLimit;
  return {
    ...(flags.topic === undefined ? {} : { topic: flags.topic }),
    ...(flags.group === undefined ? {} : { group: flags.group }),
    ...(flags.reason === undefined ? {} : { reason: flags.reason }),
    ...(limit === undefined ? {} : { limit }),
  };
}

/** `<id>` or `--all [filters]`, never both, never neither. */
function targetOf(verb: string, id: string | undefined, flags: BulkFlags): string | DeadLetterFilter {
  const filtered = flags.topic !== undefined || flags.group !== undefined || flags.reason !== undefined;
  if (id !== undefined && (flags.all || filtered || flags.limit !== undefined)) {
    throw new UsageError(`dlq ${verb}: give either a record id or --all with filters, not both`);
  }
  if (id !== undefined) return id;
  if (!flags.all) throw new UsageError(`dlq ${verb}: give a record id, or --all (optionally with filters)`);
  return filterOf(flags);
}

/** `agentbus dlq list|show|replay|purge`: inspect and act on the dead-letter store. */
export function registerDlqCommand(program: Command, ctx: CliContext): void {
  const dlq = program.command('dlq').description('inspect, replay and purge dead-lettered messages');

  withFilters(dlq.command('list').description('list dead-lettered messages, oldest first')).action(
    async (flags: FilterFlags, command: Command) => {
      const transport = await connectTransport(ctx, transportUrlOf(command));
      const views = (await transport.deadLetters.list(filterOf(flags, DLQ_DEFAULTS.limit))).map(viewDeadLetter);
      if (flags.json) ctx.out.line(JSON.stringify(views));
      else if (views.length === 0) ctx.out.note('no dead letters match');
      else for (const line of deadLetterTable(views, ctx.out.style)) ctx.out.line(line);
    },
  );

  dlq
    .command('show')
    .description('show one dead-letter record in full, with its envelope decoded')
    .argument('<id>', 'dead-letter record id (see dlq list)')
    .option('--json', 'machine-readable output')
    .action(async (id: string, flags: { json?: boolean }, command: Command) => {
      const transport = await connectTransport(ctx, transportUrlOf(command));
      const record = await transport.deadLetters.get(id);
      if (!record) throw new NotFoundError(`no dead letter with id ${id}`);
      const view = viewDeadLetter(record);
      if (flags.json) ctx.out.line(JSON.stringify(view));
      else for (const line of deadLetterDetails(view, ctx.out.style)) ctx.out.line(line);
    });

  for (const [verb, pastTense, description] of [
    ['replay', 'replayed', 'put dead letters back on their original topic, for the group that dead-lettered them'],
    ['purge', 'purged', 'delete dead letters for good'],
  ] as const) {
    withFilters(
      dlq
        .command(verb)
        .description(description)
        .argument('[id]', 'one record id')
        .option('--all', `${verb} every record matching the filters (all records without filters)`),
    ).action(async (id: string | undefined, flags: BulkFlags, command: Command) => {
      const target = targetOf(verb, id, flags);
      const transport = await connectTransport(ctx, transportUrlOf(command));
      const n =
        typeof target !== 'string' && progressWanted(flags.json)
          ? await bulkWithProgress(transport, verb, target)
          : verb === 'replay'
            ? await transport.deadLetters.replay(target)
            : await transport.deadLetters.purge(target);
      if (typeof target === 'string' && n === 0) throw new NotFoundError(`no dead letter with id ${target}`);
      if (flags.json) ctx.out.line(JSON.stringify({ [pastTense]: n }));
      else ctx.out.line(`${pastTense} ${n} dead letter${n === 1 ? '' : 's'}`);
    });
  }
}

/**
 * A bulk replay or purge record by record under a progress bar (a terminal only): the matching
 * records are listed once (at most `limit`, else {@link DLQ_DEFAULTS.progressSnapshot}) and acted
 * on by id, so records dead-lettered again meanwhile are not picked up twice. Without a `limit`,
 * whatever matched beyond the snapshot goes in one bulk call at the end.
 */
async function bulkWithProgress(
  transport: Transport,
  verb: 'replay' | 'purge',
  filter: DeadLetterFilter,
): Promise<number> {
  const store = transport.deadLetters;
  const act = (target: string | DeadLetterFilter) => (verb === 'replay' ? store.replay(target) : store.purge(target));
  const cap = filter.limit ?? DLQ_DEFAULTS.progressSnapshot;
  const records = await store.list({ ...filter, limit: cap });
  const progress = startProgress({
    enabled: true,
    total: records.length,
    unit: 'dead letters',
    label: `${verb === 'replay' ? 'replaying' : 'purging'}`,
  });
  let n = 0;
  try {
    for (const record of records) {
      n += await act(record.id);
      progress.advance(1, record.message.topic);
    }
  } finally {
    progress.stop();
  }
  if (filter.limit === undefined && records.length === cap) n += await act(filter);
  return n;
}
