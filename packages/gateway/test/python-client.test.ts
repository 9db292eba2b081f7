import { execFile, execFileSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { until } from '@agentbus/conformance';
import type { Envelope } from '@agentbus/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jwtPair, memoryFixture, type RunningGateway, startGateway, uniqueTopic } from './gateway-fixtures.js';
import { wsUrl } from './ws-helpers.js';

const EXAMPLES = join(dirname(fileURLToPath(import.meta.url)), '../../../examples/python');

/** The first Python that has the `websockets` package (Debian's python3-websockets lives in /usr/bin/python3). */
function findPython(): string | undefined {
  for (const candidate of [process.env.AGENTBUS_PYTHON, 'python3', '/usr/bin/python3']) {
    if (!candidate) continue;
    try {
      execFileSync(candidate, ['-c', 'import websockets'], { stdio: 'ignore' });
      return candidate;
    } catch {
      // try the next one
    }
  }
  return undefined;
}

const python = findPython();
if (!python) {
  const msg = 'no python3 with the websockets package (apt install python3-websockets)';
  if (process.env.CI) throw new Error(msg);
  console.warn(`SKIPPING the Python client test: ${msg}`);
}

function runExample(env: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      python as string,
      [join(EXAMPLES, 'agentbus_example.py')],
      { cwd: EXAMPLES, env: { ...process.env, ...env }, timeout: 20_000 },
      (err, stdout, stderr) => resolve({ code: err ? Number(err.code ?? 1) : 0, stdout, stderr }),
    );
  });
}

describe.skipIf(!python)('Python client (examples/python)', () => {
  let gw: RunningGateway;
  beforeAll(async () => {
    gw = await startGateway(memoryFixture());
  });
  afterAll(async () => {
    await gw?.stop();
  });

  it('subscribes, publishes, receives and acks, answers a request and makes one', async () => {
    const prefix = uniqueTopic('py');
    const seen: Envelope[] = [];
    const tap = await gw.bus.subscribe(`${prefix}.tasks`, (d) => {
      seen.push(d.envelope);
    });
    const run = await runExample({ AGENTBUS_WS_URL: wsUrl(gw.url), AGENTBUS_PREFIX: prefix, AGENTBUS_COUNT: '5' });
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    const out = JSON.parse(run.stdout.trim());
    expect(out.received.map((r: { n: number }) => r.n).sort()).toEqual([0, 1, 2, 3, 4]);
    expect(out.received.every((r: { attempt: number }) => r.attempt === 1)).toBe(true);
    expect(out.reply).toEqual({ doubled: 42 });
    expect(out.refused).toBe('VALIDATION');
    await until(() => seen.length === 5, 5_000, 'the published messages on the bus');
    expect(seen.map((e) => e.id).sort()).toEqual([...out.published].sort());
    expect(seen[0]).toMatchObject({ type: 'demo.task', source: 'gateway' });
    await tap.close();
    // The client closed cleanly; the gateway released its socket.
    await until(() => gw.gateway.context.connections.size === 0, 5_000, 'python socket closed');
  });

  it('authenticates with a bearer token; what it publishes carries its subject', async () => {
    const { issuer, verifier } = jwtPair();
    const secured = await startGateway(memoryFixture(), { auth: { verifier } });
    try {
      const prefix = uniqueTopic('pyauth');
      const seen: Envelope[] = [];
      const tap = await secured.bus.subscribe(`${prefix}.tasks`, (d) => {
        seen.push(d.envelope);
      });
      const token = await issuer.issue({ subject: 'python-agent' });
      const run = await runExample({
        AGENTBUS_WS_URL: wsUrl(secured.url),
        AGENTBUS_PREFIX: prefix,
        AGENTBUS_TOKEN: token,
      });
      expect(run.code).toBe(0);
      expect(JSON.parse(run.stdout.trim()).reply).toEqual({ doubled: 42 });
      await until(() => seen.length === 3, 5_000, 'the published messages');
      expect(seen.every((e) => e.source === 'python-agent')).toBe(true);
      await tap.close();
      const refused = await runExample({ AGENTBUS_WS_URL: wsUrl(secured.url), AGENTBUS_PREFIX: prefix });
      expect(refused.code).toBe(1);
      expect(JSON.parse(refused.stdout.trim()).error).toContain('UNAUTHORIZED');
    } finally {
      await secured.stop();
    }
  });
});
