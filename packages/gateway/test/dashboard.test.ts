import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { until } from '@agentbus/conformance';
import {
  createJwtIssuer,
  createJwtVerifier,
  createPolicy,
  type Envelope,
  memorySagaRepository,
  type SagaStepState,
} from '@agentbus/core';
import { DASHBOARD_CSP, type GatewayOptions } from '@agentbus/gateway';
import { type Browser, type BrowserContext, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { memoryFixture, type RunningGateway, startGateway as startFixtureGateway } from './gateway-fixtures.js';

const CHROMIUM = '/usr/bin/chromium';
const HAVE_CHROMIUM = existsSync(CHROMIUM);
const CI = process.env.CI === 'true' || process.env.CI === '1';
/** Without chromium the browser tests skip locally and fail under CI. */
const browserIt = HAVE_CHROMIUM || CI ? it : it.skip;
const WAIT_MS = 10_000;

/**
 * What the functions run in the page (`waitForFunction`, `evaluate`) use of the browser: the test
 * program has no DOM lib. They are serialized into the page, so each casts `globalThis` itself.
 */
interface PageGlobals {
  readonly document: {
    querySelector(selector: string): { textContent: string | null; getAttribute(name: string): string | null } | null;
    querySelectorAll(selector: string): { length: number };
  };
  readonly sessionStorage: { getItem(key: string): string | null };
}
type Running = RunningGateway;

/** A gateway on the memory transport with the dashboard on (the fixtures' default is off). */
function startGateway(options: Omit<GatewayOptions, 'bus'> = {}): Promise<Running> {
  return startFixtureGateway(memoryFixture(), { dashboard: true, ...options });
}

function unique(prefix: string): string {
  return `${prefix}.${randomBytes(4).toString('hex')}`;
}

async function post(url: string, body: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

/** A raw GET: the path goes on the wire exactly as given (fetch would normalize `..`). */
function rawGet(
  base: string,
  path: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }> {
  const { hostname, port } = new URL(base);
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: hostname, port, path, method: 'GET', headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }),
      );
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

describe('dashboard assets', () => {
  let gw: Running;
  beforeAll(async () => {
    gw = await startGateway();
  });
  afterAll(async () => {
    await gw?.stop();
  });

  it('serves the page and its assets with content types, cache validators and security headers', async () => {
    const page = await rawGet(gw.url, '/');
    expect(page.status).toBe(200);
    expect(page.headers['content-type']).toBe('text/html; charset=utf-8');
    expect(page.body).toContain('<script type="module" src="dashboard/app.js"></script>');
    expect(page.headers['content-security-policy']).toBe(DASHBOARD_CSP);
    expect(DASHBOARD_CSP).toContain("default-src 'self'");
    expect(DASHBOARD_CSP).toContain("frame-ancestors 'none'");
    expect(DASHBOARD_CSP).not.toContain('unsafe-inline');
    expect(page.headers['x-content-type-options']).toBe('nosniff');
    expect(page.headers['referrer-policy']).toBe('no-referrer');
    expect(page.headers['cache-control']).toBe('no-cache');
    for (const path of ['/dashboard', '/dashboard/']) {
      const res = await fetch(`${gw.url}${path}`);
      expect(res.url, path).toBe(`${gw.url}/`);
      expect(res.headers.get('content-type'), path).toBe('text/html; charset=utf-8');
    }
    for (const [file, type] of [
      ['app.js', 'text/javascript; charset=utf-8'],
      ['api.js', 'text/javascript; charset=utf-8'],
      ['style.css', 'text/css; charset=utf-8'],
      ['icon.svg', 'image/svg+xml'],
    ] as const) {
      const res = await rawGet(gw.url, `/dashboard/${file}`);
      expect(res.status, file).toBe(200);
      expect(res.headers['content-type'], file).toBe(type);
      expect(res.headers['content-security-policy'], file).toBe(DASHBOARD_CSP);
      const etag = res.headers.etag as string;
      expect(etag).toMatch(/^"[\w-]+"$/);
      const again = await rawGet(gw.url, `/dashboard/${file}`, { 'if-none-match': etag });
      expect(again.status, file).toBe(304);
      expect(again.body).toBe('');
    }
  });

  it('refuses path traversal and anything not whitelisted with 404', async () => {
    const attempts = [
      '/dashboard/../package.json',
      '/dashboard/../../package.json',
      '/dashboard/..%2fpackage.json',
      '/dashboard/..%2F..%2Fpackage.json',
      '/dashboard/%2e%2e/package.json',
      '/dashboard/%2e%2e%2fpackage.json',
      '/dashboard/%2E%2E%2F%2E%2E%2Fpackage.json',
      '/dashboard/%252e%252e%252fpackage.json',
      '/dashboard/..%5cpackage.json',
      '/dashboard/..\\package.json',
      '/dashboard/....//package.json',
      '/dashboard/.%2e/src/dashboard/dashboard.ts',
      '/dashboard/app.js%00.html',
      '/dashboard/app.js/../../package.json',
      '/dashboard/%2fetc%2fpasswd',
      '/dashboard/index.html',
      '/dashboard/nope.js',
      '/dashboard/APP.JS',
      '/dashboard/.gitignore',
    ];
    for (const path of attempts) {
      const res = await rawGet(gw.url, path);
      expect(res.status, path).toBe(404);
      expect(res.body, path).not.toContain('@agentbus/gateway');
      expect(res.body, path).not.toContain('root:');
      expect(JSON.parse(res.body).error.code, path).toBe('NOT_FOUND');
    }
  });
});

describe('dashboard in chromium', () => {
  let browser: Browser;
  beforeAll(async () => {
    if (!HAVE_CHROMIUM) {
      if (CI) throw new Error(`chromium is required under CI and missing at ${CHROMIUM}`);
      return;
    }
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        '--headless=new',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
  });
  afterAll(async () => {
    await browser?.close();
  });

  /** A fresh browser context with the dashboard of `url` loaded; `problems` collects console errors. */
  async function open(url: string): Promise<{ context: BrowserContext; page: Page; problems: string[] }> {
    const context = await browser.newContext({ viewport: { width: 1400, height: 1100 } });
    const page = await context.newPage();
    page.setDefaultTimeout(WAIT_MS);
    const problems: string[] = [];
    page.on('console', (m) => {
      if (m.type() === 'error' || m.type() === 'warning') problems.push(`console.${m.type()}: ${m.text()}`);
    });
    page.on('pageerror', (err) => problems.push(`pageerror: ${err.message}`));
    page.on('requestfailed', (r) => problems.push(`requestfailed: ${r.url()} ${r.failure()?.errorText}`));
    await page.goto(url);
    await page.locator('body[data-ready="true"]').waitFor();
    return { context, page, problems };
  }

  /** Waits until exactly `n` elements match `selector`. */
  async function waitCount(page: Page, selector: string, n: number): Promise<void> {
    await page.waitForFunction(
      ([sel, count]) =>
        (globalThis as unknown as PageGlobals).document.querySelectorAll(sel as string).length === count,
      [selector, n] as const,
    );
  }

  /** The numeric cell `testid` in the row `rowSelector`, once its text is `value`. */
  async function waitCell(page: Page, rowSelector: string, testid: string, value: number): Promise<void> {
    await page
      .locator(`${rowSelector} [data-testid="${testid}"]`)
      .filter({ hasText: new RegExp(`^\\s*${value}\\s*$`) })
      .waitFor();
  }

  browserIt('loads without console errors and shows every component of the deep health passing', async () => {
    const gw = await startGateway();
    const { context, page, problems } = await open(gw.url);
    try {
      const health = (await (await fetch(`${gw.url}/health?deep=1`)).json()) as { checks: Record<string, unknown> };
      const names = Object.keys(health.checks);
      expect(names.length).toBeGreaterThanOrEqual(4);
      for (const name of names)
        await page.locator(`[data-testid="health-row"][data-check="${name}"][data-status="pass"]`).waitFor();
      expect(await page.locator('[data-testid="health-row"]').count()).toBe(names.length);
      await page.locator('[data-testid="overall-status"][data-status="pass"]').waitFor();
      // The API-backed sections rendered too (stats, dead letters, sagas: empty states, no errors).
      await page.locator('[data-testid="transport"]', { hasText: 'memory' }).waitFor();
      await page.locator('[data-testid="dlq-count"]', { hasText: '0 records' }).waitFor();
      await page.locator('[data-testid="saga-rows"]', { hasText: 'No saga repository' }).waitFor();
      await page.locator('[data-testid="connection-rows"]', { hasText: 'No WebSocket client' }).waitFor();
      await page.locator('[data-testid="agent-rows"]', { hasText: 'No agent' }).waitFor();
      // A second stats round (1 s polling) has come and gone without trouble.
      const first = await page.locator('[data-testid="updated"]').textContent();
      await page.waitForFunction(
        (before) =>
          (globalThis as unknown as PageGlobals).document.querySelector('[data-testid="updated"]')?.textContent !==
          before,
        first,
      );
      expect(await page.locator('[data-testid="auth-panel"]').isHidden()).toBe(true);
      for (const id of ['health-error', 'stats-error', 'dlq-error', 'agents-error', 'sagas-error'])
        expect(await page.locator(`[data-testid="${id}"]`).isHidden(), id).toBe(true);
      expect(problems).toEqual([]);
    } finally {
      await context.close();
      await gw.stop();
    }
  });

  browserIt("shows a published message's effect: the topic's count and the group's deliveries rise", async () => {
    const gw = await startGateway();
    const { context, page, problems } = await open(gw.url);
    const topic = unique('orders');
    const group = unique('billing');
    const received: unknown[] = [];
    const sub = await gw.bus.subscribe(topic, (d) => void received.push(d.data), { group });
    try {
      const topicRow = `[data-testid="topic-row"][data-topic="${topic}"]`;
      const groupRow = `[data-testid="group-row"][data-group="${group}"]`;
      expect((await post(`${gw.url}/v1/topics/${topic}/messages`, { data: { n: 1 } })).status).toBe(201);
      await waitCell(page, topicRow, 'topic-published', 1);
      await waitCell(page, groupRow, 'group-delivered', 1);
      const batch = await post(`${gw.url}/v1/topics/${topic}/messages`, {
        messages: [{ data: { n: 2 } }, { data: { n: 3 } }],
      });
      expect(batch.status).toBe(201);
      await waitCell(page, topicRow, 'topic-published', 3);
      await waitCell(page, groupRow, 'group-delivered', 3);
      await waitCell(page, groupRow, 'group-failed', 0);
      await waitCell(page, groupRow, 'group-backlog', 0);
      expect(received).toHaveLength(3);
      expect(await page.locator(`${groupRow} th`).textContent()).toBe(group);
      // The chart's text alternative counts what the history holds.
      // (other publishes, such as the agent directory's discover, count too.)
      await page.waitForFunction(() => {
        const label =
          (globalThis as unknown as PageGlobals).document
            .querySelector('[data-testid="chart"]')
            ?.getAttribute('aria-label') ?? '';
        const m = /(\d+) published, (\d+) delivered in all/.exec(label);
        return m !== null && Number(m[1]) >= 3 && Number(m[2]) >= 3;
      });
      await page.screenshot({ path: '/tmp/dashboard.png', fullPage: true });
      expect(problems).toEqual([]);
    } finally {
      await sub.close();
      await context.close();
      await gw.stop();
    }
  });

  browserIt('searches the dead letters, shows one, replays it from the page and purges another', async () => {
    const gw = await startGateway();
    const topic = unique('payments');
    const group = unique('payments-worker');
    const seen = new Set<string>();
    const redelivered: Envelope[] = [];
    const sub = await gw.bus.subscribe(
      topic,
      async (d) => {
        if (!seen.has(d.envelope.id)) {
          seen.add(d.envelope.id);
          await d.deadLetter('bad-input', { error: 'amount is missing' });
          return;
        }
        redelivered.push(d.envelope);
      },
      { group },
    );
    const alpha = `alpha-${randomBytes(3).toString('hex')}`;
    const beta = `beta-${randomBytes(3).toString('hex')}`;
    const { context, page, problems } = await open(gw.url);
    try {
      const a = await post(`${gw.url}/v1/topics/${topic}/messages`, {
        data: { order: alpha, note: '<img src=x onerror=alert(1)>' },
        headers: { tenant: 'acme' },
      });
      const b = await post(`${gw.url}/v1/topics/${topic}/messages`, { data: { order: beta } });
      expect([a.status, b.status]).toEqual([201, 201]);
      await until(() => seen.size === 2, WAIT_MS, 'both dead-lettered');

      const rows = page.locator(`[data-testid="dlq-row"][data-topic="${topic}"]`);
      await waitCount(page, `[data-testid="dlq-row"][data-topic="${topic}"]`, 2);
      await page.locator('[data-testid="dlq-search"]').fill(alpha);
      await page.locator('[data-testid="dlq-search-submit"]').click();
      await waitCount(page, `[data-testid="dlq-row"][data-topic="${topic}"]`, 1);
      await page.locator('[data-testid="dlq-count"]', { hasText: '1 record matching' }).waitFor();

      // Detail (opened from the keyboard): the envelope (escaped, not HTML), the error, the attempts and the headers.
      await rows.first().focus();
      await page.keyboard.press('Enter');
      const detail = page.locator('[data-testid="dlq-detail"]');
      await detail.locator('[data-testid="dlq-detail-envelope"]', { hasText: alpha }).waitFor();
      const envelopeText = await detail.locator('[data-testid="dlq-detail-envelope"]').textContent();
      expect(JSON.parse(envelopeText ?? '')).toMatchObject({ id: a.body.id, topic, data: { order: alpha } });
      expect(await page.locator('img[src="x"]').count()).toBe(0);
      const fields = await detail.locator('[data-testid="dlq-detail-fields"]').textContent();
      expect(fields).toContain('amount is missing');
      expect(fields).toContain('bad-input');
      expect(await detail.locator('[data-testid="dlq-detail-headers"]').textContent()).toContain('acme');
      await page.screenshot({ path: '/tmp/dashboard-dead-letter.png', fullPage: true });

      const id = await rows.first().getAttribute('data-id');
      expect(id).toBeTruthy();
      await rows.first().locator('[data-testid="dlq-replay"]').click();
      await page.locator('[data-testid="dlq-feedback"][data-kind="ok"]', { hasText: 'Replayed' }).waitFor();
      await until(() => redelivered.length === 1, WAIT_MS, 'the replayed message reaches the handler');
      expect(redelivered[0]).toMatchObject({ id: a.body.id, data: { order: alpha } });
      await waitCount(page, `[data-testid="dlq-row"][data-topic="${topic}"]`, 0);
      expect((await fetch(`${gw.url}/v1/dead-letters/${id}`)).status).toBe(404);
      expect(await detail.isHidden()).toBe(true);

      // Clearing the search brings the other record back; Purge asks for a second click.
      await page.locator('[data-testid="dlq-search"]').fill('');
      await page.locator('[data-testid="dlq-search-submit"]').click();
      await waitCount(page, `[data-testid="dlq-row"][data-topic="${topic}"]`, 1);
      const purge = rows.first().locator('[data-testid="dlq-purge"]');
      await purge.click();
      await purge.filter({ hasText: 'Confirm purge' }).click();
      await page.locator('[data-testid="dlq-feedback"][data-kind="ok"]', { hasText: 'Purged' }).waitFor();
      await waitCount(page, `[data-testid="dlq-row"][data-topic="${topic}"]`, 0);
      const left = (await (await fetch(`${gw.url}/v1/dead-letters?topic=${topic}`)).json()) as { items: unknown[] };
      expect(left.items).toEqual([]);
      expect(redelivered).toHaveLength(1);
      expect(problems).toEqual([]);
    } finally {
      await sub.close();
      await context.close();
      await gw.stop();
    }
  });

  browserIt('shows agents, WebSocket clients and sagas in flight, as text', async () => {
    const sagas = memorySagaRepository();
    const step = (name: string, status: SagaStepState['status']): SagaStepState => ({
      name,
      status,
      attempts: status === 'pending' ? 0 : 1,
      failures: 0,
      compensationAttempts: 0,
      compensationFailures: 0,
      interruptions: 0,
    });
    const now = Date.now();
    await sagas.create({
      id: 'saga-1',
      name: 'book-trip',
      status: 'running',
      payload: {},
      steps: [step('reserve-flight', 'succeeded'), step('reserve-hotel', 'running'), step('charge', 'pending')],
      createdAtMs: now,
      updatedAtMs: now,
      version: 1,
      owner: 'orchestrator-a',
    });
    await sagas.create({
      id: 'saga-2',
      name: 'book-trip',
      status: 'completed',
      payload: {},
      steps: [step('reserve-flight', 'succeeded')],
      createdAtMs: now,
      updatedAtMs: now,
      version: 1,
    });
    const gw = await startGateway({ sagas });
    // The WebSocket module is not in this test: a registry stands in for it.
    gw.gateway.context.connections = {
      size: 1,
      list: () => [
        {
          id: 'conn-1',
          subject: '<b>mallory</b>',
          remoteAddress: '127.0.0.1',
          connectedAtMs: now,
          subscriptions: [{ id: 's1', pattern: 'orders.>', group: 'billing', durable: true }],
          framesIn: 12,
          framesOut: 34,
          bufferedBytes: 2048,
        },
      ],
      closeAll: async () => {},
    };
    const agent = gw.bus.agent({
      id: 'summarizer',
      name: 'Summarizer',
      description: '<script>alert(1)</script>',
      topics: ['task.summarize.*'],
    });
    await agent.start();
    const { context, page, problems } = await open(gw.url);
    try {
      const agentRow = page.locator('[data-testid="agent-row"][data-agent="summarizer"]');
      await agentRow.filter({ hasText: 'task.summarize.*' }).waitFor();
      expect(await agentRow.textContent()).toContain('<script>alert(1)</script>');
      const conn = page.locator('[data-testid="connection-row"][data-connection="conn-1"]');
      await conn.waitFor();
      const connText = await conn.textContent();
      expect(connText).toContain('<b>mallory</b>');
      expect(connText).toContain('orders.> → billing (durable)');
      expect(connText).toContain('12 / 34');
      expect(connText).toContain('2.0 KiB');
      expect(await page.locator('b', { hasText: 'mallory' }).count()).toBe(0);
      const saga = page.locator('[data-testid="saga-row"][data-saga="saga-1"]');
      await saga.waitFor();
      const sagaText = await saga.textContent();
      expect(sagaText).toContain('book-trip');
      expect(sagaText).toContain('running');
      expect(sagaText).toContain('1/3');
      expect(sagaText).toContain('reserve-hotel (running)');
      expect(sagaText).toContain('orchestrator-a');
      expect(await page.locator('[data-testid="saga-row"]').count()).toBe(1);
      await page
        .locator('[data-testid="health-row"][data-check="gateway:connections"]', { hasText: '1 connections' })
        .waitFor();
      expect(problems).toEqual([]);
    } finally {
      await agent.stop();
      await context.close();
      await gw.stop();
    }
  });

  browserIt('with auth on, asks for a token and works once one is given', async () => {
    const secret = randomBytes(32);
    const issuer = createJwtIssuer({ key: secret, alg: 'HS256', issuer: 'dashboard-test', audience: 'gateway' });
    const verifier = createJwtVerifier({
      keys: [{ key: secret, alg: 'HS256' }],
      issuer: 'dashboard-test',
      audience: 'gateway',
    });
    const policy = createPolicy({
      roles: {
        writer: { rules: [{ actions: ['publish'], patterns: ['orders.>'] }] },
        operator: { inherits: ['writer'], rules: [{ actions: ['dlq-admin'], patterns: ['>'] }] },
      },
    });
    const gw = await startGateway({ auth: { verifier, policy } });
    const { context, page } = await open(gw.url);
    const topic = unique('orders');
    try {
      const panel = page.locator('[data-testid="auth-panel"]');
      await panel.waitFor({ state: 'visible' });
      await page.locator('[data-testid="auth-message"]', { hasText: 'UNAUTHORIZED' }).waitFor();
      // /health is open: it shows without a token.
      await page.locator('[data-testid="overall-status"][data-status="pass"]').waitFor();
      expect(await page.locator('[data-testid="transport"]').textContent()).toBe('—');

      // A bad token is refused, readably.
      await page.locator('[data-testid="token-input"]').fill('not-a-jwt');
      await page.locator('[data-testid="token-save"]').click();
      await page.locator('[data-testid="auth-message"]', { hasText: 'refused the token' }).waitFor();
      await panel.waitFor({ state: 'visible' });

      // A writer may read stats but not the operator views: those say so, code and message.
      const writer = await issuer.issue({ subject: 'writer-1', roles: ['writer'] });
      await page.locator('[data-testid="token-input"]').fill(writer);
      await page.locator('[data-testid="token-save"]').click();
      await panel.waitFor({ state: 'hidden' });
      await page.locator('[data-testid="transport"]', { hasText: 'memory' }).waitFor();
      for (const id of ['dlq-error', 'sagas-error', 'connections-error']) {
        const text = await page.locator(`[data-testid="${id}"]`).filter({ hasText: 'FORBIDDEN' }).textContent();
        expect(text, id).toMatch(/^FORBIDDEN: \S.*dlq-admin/);
      }

      const token = await issuer.issue({ subject: 'operator', roles: ['operator'] });
      await page.locator('[data-testid="token-toggle"]').click();
      await panel.waitFor({ state: 'visible' });
      await page.locator('[data-testid="token-input"]').fill(token);
      await page.locator('[data-testid="token-input"]').press('Enter');
      await panel.waitFor({ state: 'hidden' });
      await page.locator('[data-testid="sagas-error"]').waitFor({ state: 'hidden' });
      await page.locator('[data-testid="dlq-error"]').waitFor({ state: 'hidden' });
      await page.locator('[data-testid="dlq-count"]', { hasText: '0 records' }).waitFor();
      await page.locator('[data-testid="transport"]', { hasText: 'memory' }).waitFor();
      const res = await post(
        `${gw.url}/v1/topics/${topic}/messages`,
        { data: 1 },
        { authorization: `Bearer ${token}` },
      );
      expect(res.status).toBe(201);
      await waitCell(page, `[data-testid="topic-row"][data-topic="${topic}"]`, 'topic-published', 1);
      expect(
        await page.evaluate(() =>
          (globalThis as unknown as PageGlobals).sessionStorage.getItem('agentbus.dashboard.token'),
        ),
      ).toBe(token);

      // The token survives a reload of the tab: no question asked.
      await page.reload();
      await page.locator('body[data-ready="true"]').waitFor();
      await waitCell(page, `[data-testid="topic-row"][data-topic="${topic}"]`, 'topic-published', 1);
      expect(await panel.isHidden()).toBe(true);
    } finally {
      await context.close();
      await gw.stop();
    }
  });
});
