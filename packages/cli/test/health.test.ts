import { createBus, memoryTransport } from '@agentbus/core';
import { createGateway, type Gateway } from '@agentbus/gateway';
import { afterEach, describe, expect, it } from 'vitest';
import { healthLines } from '../src/commands/health.js';
import { createStyle, type Output } from '../src/output.js';
import { createProgram } from '../src/program.js';
import { runCli } from '../src/run-cli.js';

/** Runs `agentbus …args` in this process, capturing stdout and stderr. */
async function run(args: readonly string[]) {
  const lines: string[] = [];
  const notes: string[] = [];
  const out: Output = { line: (t = '') => lines.push(t), note: (t) => notes.push(t), style: createStyle(false) };
  const noSignals = { once: () => undefined, off: () => undefined };
  const code = await runCli(createProgram, args, { out, signals: noSignals });
  return { code, stdout: lines.join('\n'), stderr: notes.join('\n') };
}

const gateways: Gateway[] = [];
afterEach(async () => {
  for (const g of gateways.splice(0)) await g.close();
});

async function gateway(): Promise<{ gateway: Gateway; url: string }> {
  const bus = createBus({ transport: memoryTransport() });
  const g = await createGateway({ bus, logger: false, ownsBus: true });
  gateways.push(g);
  return { gateway: g, url: await g.listen({ port: 0 }) };
}

describe('agentbus health', () => {
  it('prints the deep checks of a passing gateway and exits 0', async () => {
    const { url } = await gateway();
    const out = await run(['health', '--url', url]);
    expect(out.code).toBe(0);
    const [head, , header, ...rows] = out.stdout.split('\n');
    expect(head).toBe(`pass  agentbus gateway (memory) at ${url}`);
    expect(header).toMatch(/^CHECK\s+COMPONENT\s+STATUS\s+OBSERVED\s+OUTPUT$/);
    expect(rows.map((r) => r.split(/\s+/)[0])).toEqual([
      'transport:roundtrip',
      'deadLetters:list',
      'subscriptions:open',
      'gateway:connections',
    ]);
  });

  it('--no-deep asks for the surface check only', async () => {
    const { url } = await gateway();
    const out = await run(['health', '--url', url, '--no-deep', '--json']);
    expect(out.code).toBe(0);
    const doc = JSON.parse(out.stdout) as { status: string; checks?: unknown };
    expect(doc.status).toBe('pass');
    expect(doc.checks).toBeUndefined();
  });

  it('exits 1 with the checks printed when the gateway fails', async () => {
    const { gateway: g, url } = await gateway();
    await g.context.bus.close();
    const out = await run(['health', '--url', url]);
    expect(out.code).toBe(1);
    expect(out.stdout).toMatch(/^fail {2}agentbus gateway/);
    expect(out.stdout).toMatch(/subscriptions:open\s+bus\s+fail\s+.*the bus is closed/);
    expect(out.stderr).toBe(`error: UNHEALTHY: ${url} is failing its health check`);
  });

  it('exits 1 when nothing answers, with a JSON verdict under --json', async () => {
    const { gateway: g, url } = await gateway();
    await g.close();
    const out = await run(['health', '--url', url, '--json']);
    expect(out.code).toBe(1);
    expect(JSON.parse(out.stdout)).toMatchObject({ status: 'fail' });
    expect(out.stderr).toMatch(
      /^error: CONNECTION: gateway at http:\/\/127\.0\.0\.1:\d+ is unreachable \(ECONNREFUSED\)$/,
    );
  });

  it('exits 1 when the URL answers without a health document', async () => {
    const { url } = await gateway();
    const out = await run(['health', '--url', `${url}/v1`]);
    expect(out.code).toBe(1);
    expect(out.stderr).toMatch(/answered 404 without a health document/);
  });

  it('refuses a malformed URL as usage (exit 2)', async () => {
    const out = await run(['health', '--url', 'not a url']);
    expect(out.code).toBe(2);
    expect(out.stderr).toBe("error: USAGE: --url: 'not a url' is not a URL; e.g. http://127.0.0.1:8080");
  });

  it('checks the transport directly with --transport and no --url', async () => {
    const out = await run(['--transport', 'memory:', 'health']);
    expect(out.code).toBe(0);
    expect(out.stdout).toMatch(/^pass {2}agentbus transport \(memory\) at memory:/);
    expect(out.stdout).toMatch(/transport:roundtrip\s+memory\s+pass/);
  });

  it('renders a warn in the status line and the row', () => {
    const lines = healthLines(
      {
        status: 'warn',
        description: 'agentbus gateway',
        serviceId: 'redis',
        target: 'http://h:1',
        checks: { 'transport:roundtrip': [{ componentType: 'datastore', status: 'warn', time: '', output: 'slow' }] },
      },
      createStyle(false),
    );
    expect(lines[0]).toBe('warn  agentbus gateway (redis) at http://h:1');
    expect(lines.at(-1)).toMatch(/^transport:roundtrip\s+warn\s+slow$/);
  });
});
