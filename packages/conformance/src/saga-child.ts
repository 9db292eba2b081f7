/**
 * The orchestrator of the saga crash test (see saga-crash.ts), run in a child process so it can
 * be SIGKILLed. argv: <fixture module> <arg> <sagas> <owner id>
 * Resumes the unfinished sagas, then starts sagas crash-0 … crash-<n-1> (idempotent on the id);
 * prints `{"effect":true}` per side effect recorded.
 */
import { pathToFileURL } from 'node:url';
import { createBus, sagaOrchestrator, silentLogger, stderrLogger } from '@agentbus/core';
import { crashPayload, crashSaga, type SagaCrashFixture } from './saga-crash.js';

const [moduleRef, arg, count, ownerId] = process.argv.slice(2);
if (!moduleRef || arg === undefined || !count || !ownerId) {
  process.stderr.write('usage: saga-child <module> <arg> <sagas> <owner id>\n');
  process.exit(2);
}
const out = (line: object) => process.stdout.write(`${JSON.stringify(line)}\n`);
const url = moduleRef.startsWith('file:') ? moduleRef : pathToFileURL(moduleRef).href;
const fixture = (await import(url)) as SagaCrashFixture;
const effects = fixture.createEffects(arg);
const recording = {
  ...effects,
  async record(sagaId: string, step: string, kind: 'action' | 'compensation') {
    await effects.record(sagaId, step, kind);
    out({ effect: true });
  },
};
const bus = createBus({ transport: await fixture.createTransport(arg), logger: silentLogger, source: ownerId });
const orchestrator = sagaOrchestrator({
  bus,
  repository: fixture.createRepository(arg),
  sagas: [crashSaga(recording)],
  ownerId,
  // A dead orchestrator's sagas are taken over within about a second.
  leaseMs: 1_000,
  scanIntervalMs: 100,
  // Kills are the point here: never give a step up for being cut short.
  maxInterruptions: 1_000,
  // Warnings and errors go to stderr, which the test shows when it fails.
  logger: stderrLogger,
});
// Stay up until killed: while it waits for a dead orchestrator's leases to pass, nothing else
// (the scan timer is unref'd) would keep this process alive.
setInterval(() => {}, 60_000);
const resumed = await orchestrator.resume();
out({ ready: true, resumed: resumed.length });
for (let i = 0; i < Number(count); i++) await orchestrator.start('crash', crashPayload(i), { id: `crash-${i}` });
out({ started: true });
