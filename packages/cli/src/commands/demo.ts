import type { Command } from 'commander';
import { type CliContext, connectBus, transportUrlOf } from '../context.js';
import { DEMO_DEFAULTS, DEMO_TASKS, type DemoSummary, demoGroup, newRunId, runDemo } from '../demo/demo-scenario.js';
import { DEFAULT_TRANSPORT_URL } from '../open-transport.js';
import type { Output } from '../output.js';

function printSummary(summary: DemoSummary, out: Output, persistent: boolean, url: string): void {
  const { style } = out;
  const label = (s: string) => `  ${style.bold(s.padEnd(14))}`;
  out.line();
  out.line(style.bold(`summary after ${(summary.elapsedMs / 1000).toFixed(1)} s`));
  for (const [worker, tasks] of Object.entries(summary.doneBy)) {
    out.line(`${label(worker)}${tasks.length} done${tasks.length ? `  (${tasks.join(', ')})` : ''}`);
  }
  out.line(
    `${label('retries')}${summary.retries.length}` +
      summary.retries
        .map((r) => `  ${r.taskId} failed on attempt ${r.failedAttempt}, retried after ${r.delayMs} ms`)
        .join(''),
  );
  summary.deadLetters.forEach((d, i) => {
    const head = i === 0 ? `${label('dead-lettered')}${summary.deadLetters.length}` : `${label('')} `;
    out.line(`${head}  ${d.taskId} reason=${style.yellow(d.reason)} error=${d.error ?? ''}`);
  });
  if (summary.deadLetters.length === 0) out.line(`${label('dead-lettered')}0`);
  if (!persistent) return;
  const flag = url === DEFAULT_TRANSPORT_URL ? '' : ` --transport '${url}'`;
  const first = summary.deadLetters[0];
  out.line();
  out.line(`The dead letter stays in ${url}. Look at it:`);
  out.line(`  npx agentbus dlq list${flag} --topic 'demo.${summary.runId}.>'`);
  if (!first) return;
  out.line(`  npx agentbus dlq show${flag} ${first.id}`);
  out.line('Replay it to its group, then take it from there (it comes back with attempt 1):');
  out.line(`  npx agentbus dlq replay${flag} ${first.id}`);
  out.line(`  npx agentbus tail${flag} 'demo.${summary.runId}.>' --group ${summary.group} --count 1`);
  out.line('Or drop it for good:');
  out.line(`  npx agentbus dlq purge${flag} ${first.id}`);
}

/** `agentbus demo`: a planner and two workers, with a retry and a dead letter, narrated. */
export function registerDemoCommand(program: Command, ctx: CliContext): void {
  program
    .command('demo')
    .description('watch a planner and two workers share tasks, with a retry and a dead letter (a few seconds)')
    .action(async (_flags: object, command: Command) => {
      const url = transportUrlOf(command);
      const { out } = ctx;
      const bus = await connectBus(ctx, url, { source: 'demo' });
      const runId = newRunId();
      out.line(out.style.bold(`agentbus demo  run ${runId}  on ${url}`));
      out.line(
        `A planner publishes ${DEMO_TASKS.length} tasks on demo.${runId}.task.*; ${DEMO_DEFAULTS.workers.join(' and ')} ` +
          `share them in the consumer group ${demoGroup(runId)}.`,
      );
      out.line();
      const summary = await runDemo({ bus, out, runId, signal: ctx.lifecycle.signal });
      printSummary(summary, out, bus.transport.capabilities.persistent, url);
    });
}
