/**
 * The agentbus gateway dashboard: polls the gateway's API and renders health, throughput, topics,
 * groups, dead letters, agents, WebSocket clients and sagas. Plain ES modules, no build step; all
 * API data becomes text (see dom.js), never HTML.
 */
import { ApiError, api, getToken, onAuthRequired, setToken } from './api.js';
import { ThroughputChart } from './chart.js';
import { DeadLetters } from './dead-letters.js';
import { badge, byId, bytes, clock, dateTime, duration, emptyRow, h, num, renderRows, showError } from './dom.js';

const STATS_MS = 1_000;
const HEALTH_MS = 3_000;
const SLOW_MS = 5_000;

/** Whether /v1 calls wait for a token (the API answered 401). */
let authBlocked = false;

/**
 * Runs `task` now and then every `intervalMs` after it settles (never two at once). `now()` runs it
 * at once (or right after the running one). Skipped while the tab is hidden, and for /v1 tasks
 * while a token is needed.
 */
function poller(task, intervalMs, { needsAuth = true } = {}) {
  let timer;
  let running = false;
  let again = false;
  async function tick() {
    clearTimeout(timer);
    if (running) {
      again = true;
      return;
    }
    running = true;
    try {
      if (!document.hidden && !(needsAuth && authBlocked)) await task();
    } catch (err) {
      if (!(err instanceof ApiError)) console.warn('dashboard:', err);
    } finally {
      running = false;
      timer = setTimeout(tick, again ? 0 : intervalMs);
      again = false;
    }
  }
  return { now: tick };
}

// ---- auth ------------------------------------------------------------------------------------

const authPanel = byId('auth');
const authMessage = byId('auth-message');
const tokenToggle = byId('token-toggle');
const tokenInput = byId('token-input');
const tokenState = byId('token-state');

function showAuth(open) {
  authPanel.hidden = !open;
  tokenToggle.setAttribute('aria-expanded', String(open));
}

function describeToken() {
  tokenState.textContent = getToken()
    ? 'A token is set for this tab (kept in sessionStorage until the tab closes).'
    : 'No token set. It is kept for this browser tab only (sessionStorage).';
}

onAuthRequired((err, hadToken) => {
  authBlocked = true;
  authMessage.replaceChildren(
    hadToken ? 'The gateway refused the token: ' : 'The gateway asks for a bearer token: ',
    h('strong', { class: 'code' }, err.code),
    ` ${err.message}`,
  );
  authMessage.hidden = false;
  document.body.dataset.auth = 'required';
  if (authPanel.hidden) {
    showAuth(true);
    tokenInput.focus();
  }
});

byId('token-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const token = tokenInput.value.trim().replace(/^Bearer\s+/i, '');
  if (!token) return;
  setToken(token);
  tokenInput.value = '';
  authBlocked = false;
  authMessage.replaceChildren();
  authMessage.hidden = true;
  document.body.dataset.auth = 'token';
  describeToken();
  showAuth(false);
  refreshAll();
});

byId('token-clear').addEventListener('click', () => {
  setToken('');
  tokenInput.value = '';
  document.body.dataset.auth = 'none';
  describeToken();
  refreshAll();
});

tokenToggle.addEventListener('click', () => {
  showAuth(authPanel.hidden);
  if (!authPanel.hidden) tokenInput.focus();
});

// ---- health ----------------------------------------------------------------------------------

const overall = byId('overall-status');

function setOverall(status) {
  overall.textContent = status;
  overall.dataset.status = status;
  overall.className = `badge badge-${/^[a-z]+$/.test(status) ? status : 'unknown'}`;
}

async function loadHealth() {
  try {
    const doc = await api('health?deep=1', { accept: [503] });
    showError(byId('health-error'), undefined);
    setOverall(String(doc?.status ?? 'unknown'));
    const checks = Object.entries(doc?.checks ?? {}).flatMap(([name, list]) =>
      (Array.isArray(list) ? list : []).map((c) => ({ name, ...c })),
    );
    renderRows(byId('health-rows'), JSON.stringify(checks.map(({ time: _t, ...c }) => c)), () =>
      checks.length === 0
        ? [emptyRow(5, 'No checks reported.')]
        : checks.map((c) =>
            h(
              'tr',
              { testid: 'health-row', dataset: { check: c.name, status: c.status } },
              h('th', { scope: 'row', class: 'mono' }, c.name),
              h('td', {}, c.componentId ?? '—', h('span', { class: 'hint' }, ` ${c.componentType ?? ''}`)),
              h('td', {}, badge(c.status, 'health-status')),
              h(
                'td',
                { class: 'num' },
                c.observedValue === undefined ? '—' : `${num(c.observedValue)} ${c.observedUnit ?? ''}`.trim(),
              ),
              h('td', { class: 'clip', title: c.output ?? '' }, c.output ?? ''),
            ),
          ),
    );
  } catch (err) {
    setOverall(err.code === 'NETWORK' ? 'unreachable' : 'unknown');
    showError(byId('health-error'), err);
    throw err;
  }
}

// ---- stats: summary, chart, topics, groups -----------------------------------------------------

const chart = new ThroughputChart(byId('chart'));

async function loadStats() {
  let stats;
  try {
    stats = await api('v1/stats');
    showError(byId('stats-error'), undefined);
  } catch (err) {
    showError(byId('stats-error'), err);
    throw err;
  }
  byId('transport').textContent = stats.transport ?? '—';
  byId('uptime').textContent = duration(stats.uptimeMs);
  byId('connection-count').textContent = num(stats.connections);
  const updated = byId('updated');
  updated.textContent = clock(Date.now());
  updated.title = dateTime(Date.now());

  const history = Array.isArray(stats.history) ? stats.history : [];
  chart.update(history);
  const last = history.length >= 2 ? history[history.length - 2] : history[history.length - 1];
  byId('rate-published').textContent = num(last?.published ?? 0);
  byId('rate-delivered').textContent = num(last?.delivered ?? 0);
  const total = history.reduce((n, s) => [n[0] + (s.published ?? 0), n[1] + (s.delivered ?? 0)], [0, 0]);
  byId('chart').setAttribute(
    'aria-label',
    `Messages per second over the last ${history.length} seconds: ${total[0]} published, ${total[1]} delivered in all; last second ${last?.published ?? 0} published, ${last?.delivered ?? 0} delivered.`,
  );

  const topics = Array.isArray(stats.topics) ? stats.topics : [];
  renderRows(byId('topic-rows'), JSON.stringify(topics), () =>
    topics.length === 0
      ? [emptyRow(3, 'Nothing published yet.')]
      : topics.map((t) =>
          h(
            'tr',
            { testid: 'topic-row', dataset: { topic: t.topic } },
            h('th', { scope: 'row', class: 'mono' }, t.topic),
            h('td', { class: 'num', testid: 'topic-published' }, num(t.published)),
            h('td', { title: dateTime(t.lastPublishedAtMs) }, clock(t.lastPublishedAtMs)),
          ),
        ),
  );

  const groups = Array.isArray(stats.groups) ? stats.groups : [];
  renderRows(byId('group-rows'), JSON.stringify(groups), () =>
    groups.length === 0
      ? [emptyRow(6, 'No consumer group seen yet.')]
      : groups.map((g) =>
          h(
            'tr',
            { testid: 'group-row', dataset: { group: g.group } },
            h('th', { scope: 'row', class: 'mono' }, g.group),
            h('td', { class: 'mono' }, (g.patterns ?? []).join(', ')),
            h('td', { class: 'num', testid: 'group-delivered' }, num(g.delivered)),
            h('td', { class: `num${g.failed > 0 ? ' bad' : ''}`, testid: 'group-failed' }, num(g.failed)),
            h('td', { class: 'num', testid: 'group-backlog', title: g.statsError ?? '' }, num(g.backlog)),
            h('td', { class: 'num', testid: 'group-inflight' }, num(g.inFlight)),
          ),
        ),
  );
}

// ---- agents, connections, sagas ----------------------------------------------------------------

async function section(errorId, load) {
  try {
    await load();
    showError(byId(errorId), undefined);
  } catch (err) {
    showError(byId(errorId), err);
    throw err;
  }
}

const loadAgents = () =>
  section('agents-error', async () => {
    const { items = [] } = (await api('v1/agents')) ?? {};
    renderRows(byId('agent-rows'), JSON.stringify(items), () =>
      items.length === 0
        ? [emptyRow(5, 'No agent announced itself.')]
        : items.map((a) =>
            h(
              'tr',
              { testid: 'agent-row', dataset: { agent: a.id } },
              h(
                'th',
                { scope: 'row' },
                h('span', { class: 'mono' }, a.id),
                a.card?.name && a.card.name !== a.id ? h('span', { class: 'hint' }, ` ${a.card.name}`) : null,
                a.card?.description ? h('div', { class: 'hint' }, a.card.description) : null,
              ),
              h('td', {}, a.card?.version ?? '—'),
              h('td', { class: 'num' }, num(a.instances)),
              h('td', { class: 'mono' }, (a.card?.topics ?? []).join(', ')),
              h('td', { title: dateTime(a.lastSeenMs) }, clock(a.lastSeenMs)),
            ),
          ),
    );
  });

const loadConnections = () =>
  section('connections-error', async () => {
    const { items = [] } = (await api('v1/connections')) ?? {};
    renderRows(byId('connection-rows'), JSON.stringify(items), () =>
      items.length === 0
        ? [emptyRow(6, 'No WebSocket client connected.')]
        : items.map((c) =>
            h(
              'tr',
              { testid: 'connection-row', dataset: { connection: c.id } },
              h('th', { scope: 'row' }, c.subject, h('div', { class: 'hint mono' }, c.id)),
              h('td', { class: 'mono' }, c.remoteAddress),
              h('td', { title: dateTime(c.connectedAtMs) }, clock(c.connectedAtMs)),
              h(
                'td',
                {},
                (c.subscriptions ?? []).length === 0
                  ? '—'
                  : h(
                      'ul',
                      { class: 'plain' },
                      c.subscriptions.map((s) =>
                        h(
                          'li',
                          { class: 'mono' },
                          s.pattern,
                          h('span', { class: 'hint' }, ` → ${s.group}${s.durable ? ' (durable)' : ''}`),
                        ),
                      ),
                    ),
              ),
              h('td', { class: 'num' }, `${num(c.framesIn)} / ${num(c.framesOut)}`),
              h('td', { class: 'num' }, bytes(c.bufferedBytes)),
            ),
          ),
    );
  });

const loadSagas = () =>
  section('sagas-error', async () => {
    const { items = [], enabled } = (await api('v1/sagas')) ?? {};
    renderRows(byId('saga-rows'), JSON.stringify([enabled, items]), () => {
      if (enabled === false) return [emptyRow(6, 'No saga repository is configured on this gateway.')];
      if (items.length === 0) return [emptyRow(6, 'No saga in flight.')];
      return items.map((s) => {
        const steps = Array.isArray(s.steps) ? s.steps : [];
        const done = steps.filter((st) => st.status === 'succeeded' || st.status === 'compensated').length;
        const current = steps.find((st) => !['pending', 'succeeded', 'compensated'].includes(st.status));
        return h(
          'tr',
          { testid: 'saga-row', dataset: { saga: s.id } },
          h('th', { scope: 'row', class: 'mono' }, s.id),
          h('td', {}, s.name),
          h(
            'td',
            {},
            badge(s.status),
            s.error ? h('div', { class: 'error-text' }, `${s.error.code}: ${s.error.message}`) : null,
          ),
          h(
            'td',
            {},
            `${done}/${steps.length}`,
            current ? h('span', { class: 'hint' }, ` ${current.name} (${current.status})`) : null,
          ),
          h('td', { class: 'mono' }, s.owner ?? '—'),
          h('td', { title: dateTime(s.updatedAtMs) }, clock(s.updatedAtMs)),
        );
      });
    });
  });

// ---- wiring ------------------------------------------------------------------------------------

const deadLetters = new DeadLetters({ onChange: () => pollers.deadLetters.now() });

const pollers = {
  health: poller(loadHealth, HEALTH_MS, { needsAuth: false }),
  stats: poller(loadStats, STATS_MS),
  deadLetters: poller(() => deadLetters.refresh(), SLOW_MS),
  agents: poller(loadAgents, SLOW_MS),
  connections: poller(loadConnections, SLOW_MS),
  sagas: poller(loadSagas, SLOW_MS),
};

function refreshAll() {
  for (const p of Object.values(pollers)) p.now();
}

document.addEventListener('visibilitychange', () => {
  if (!document.hidden) refreshAll();
});

document.body.dataset.auth = getToken() ? 'token' : 'none';
describeToken();
refreshAll();
document.body.dataset.ready = 'true';
