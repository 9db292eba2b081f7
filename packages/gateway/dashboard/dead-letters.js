/**
 * The dead-letter section: search, table, a detail panel for the selected record, and Replay /
 * Purge per record with feedback. Purge asks for a second click (no modal dialogs).
 */
import { api } from './api.js';
import { byId, clock, dateTime, emptyRow, h, num, renderRows, showError } from './dom.js';

const LIMIT = 100;
const PURGE_CONFIRM_MS = 5_000;

/** A two-column table of headers, or "None." */
function headerTable(headers, testid) {
  const entries = Object.entries(headers ?? {});
  if (entries.length === 0) return h('p', { class: 'hint', testid }, 'None.');
  return h(
    'table',
    { class: 'compact', testid },
    h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Header'), h('th', { scope: 'col' }, 'Value'))),
    h(
      'tbody',
      {},
      entries.map(([k, v]) =>
        h('tr', {}, h('th', { scope: 'row', class: 'mono' }, k), h('td', { class: 'mono' }, String(v))),
      ),
    ),
  );
}

export class DeadLetters {
  constructor({ onChange } = {}) {
    this.rows = byId('dlq-rows');
    this.count = byId('dlq-count');
    this.feedback = byId('dlq-feedback');
    this.error = byId('dlq-error');
    this.detail = byId('dlq-detail');
    this.detailBody = byId('dlq-detail-body');
    this.form = byId('dlq-search-form');
    this.q = byId('dlq-q');
    this.topic = byId('dlq-topic');
    this.items = [];
    this.selected = undefined;
    this.onChange = onChange ?? (() => {});
    this.generation = 0;
    let debounce;
    this.form.addEventListener('submit', (event) => {
      event.preventDefault();
      clearTimeout(debounce);
      this.onChange();
    });
    for (const input of [this.q, this.topic])
      input.addEventListener('input', () => {
        clearTimeout(debounce);
        debounce = setTimeout(() => this.onChange(), 300);
      });
    byId('dlq-detail-close').addEventListener('click', () => this.closeDetail());
  }

  /** Loads the list for the current search. */
  async refresh() {
    const params = new URLSearchParams({ limit: String(LIMIT) });
    const q = this.q.value.trim();
    const topic = this.topic.value.trim();
    if (q) params.set('q', q);
    if (topic) params.set('topic', topic);
    const generation = ++this.generation;
    try {
      const body = await api(`v1/dead-letters?${params}`);
      if (generation !== this.generation) return; // a newer search answered first
      showError(this.error, undefined);
      this.render(Array.isArray(body?.items) ? body.items : [], q !== '' || topic !== '');
    } catch (err) {
      if (generation !== this.generation) return;
      showError(this.error, err);
      throw err;
    }
  }

  render(items, filtered) {
    this.items = items;
    const more = items.length >= LIMIT ? ` (first ${LIMIT})` : '';
    this.count.textContent = `${num(items.length)} ${items.length === 1 ? 'record' : 'records'}${filtered ? ' matching' : ''}${more}`;
    const key = JSON.stringify([this.selected, items.map((d) => [d.id, d.attempts, d.reason])]);
    renderRows(this.rows, key, () =>
      items.length === 0
        ? [emptyRow(7, filtered ? 'No dead letter matches the search.' : 'No dead letters.')]
        : items.map((d) => this.row(d)),
    );
    if (this.selected !== undefined && !items.some((d) => d.id === this.selected) && !filtered) this.closeDetail();
  }

  row(d) {
    const open = () => this.select(d.id);
    const tr = h(
      'tr',
      {
        testid: 'dlq-row',
        dataset: { id: d.id, topic: d.topic },
        tabindex: 0,
        'aria-selected': String(d.id === this.selected),
        onclick: open,
        onkeydown: (event) => {
          if (event.target === tr && (event.key === 'Enter' || event.key === ' ')) {
            event.preventDefault();
            open();
          }
        },
      },
      h('td', { title: dateTime(d.deadLetteredAt) }, clock(d.deadLetteredAt)),
      h('th', { scope: 'row', class: 'mono' }, d.topic),
      h('td', { class: 'mono' }, d.group),
      h('td', {}, h('span', { class: 'tag' }, d.reason)),
      h('td', { class: 'num' }, num(d.attempts)),
      h('td', { class: 'clip', title: d.error ?? '' }, d.error ?? ''),
      h('td', { class: 'actions' }, this.buttons(d.id)),
    );
    return tr;
  }

  buttons(id) {
    const stop = (fn) => (event) => {
      event.stopPropagation();
      fn(event.currentTarget);
    };
    return [
      h(
        'button',
        { type: 'button', class: 'small', testid: 'dlq-replay', onclick: stop((b) => this.replay(id, b)) },
        'Replay',
      ),
      h(
        'button',
        { type: 'button', class: 'small danger', testid: 'dlq-purge', onclick: stop((b) => this.purge(id, b)) },
        'Purge',
      ),
    ];
  }

  async select(id) {
    this.selected = id;
    for (const tr of this.rows.querySelectorAll('tr[data-id]'))
      tr.setAttribute('aria-selected', String(tr.dataset.id === id));
    this.detail.hidden = false;
    this.detailBody.replaceChildren(h('p', { class: 'hint' }, 'Loading…'));
    try {
      const d = await api(`v1/dead-letters/${encodeURIComponent(id)}`);
      if (this.selected !== id) return;
      this.detailBody.replaceChildren(...this.describe(d));
    } catch (err) {
      if (this.selected !== id) return;
      const p = h('p', { class: 'error' });
      showError(p, err);
      this.detailBody.replaceChildren(p);
    }
  }

  describe(d) {
    const field = (label, value, cls) => [h('dt', {}, label), h('dd', { class: cls }, value ?? '—')];
    return [
      h(
        'dl',
        { class: 'fields', testid: 'dlq-detail-fields' },
        field('Record', d.id, 'mono'),
        field('Message', d.messageId, 'mono'),
        field('Topic', d.topic, 'mono'),
        field('Group', d.group, 'mono'),
        field('Reason', d.reason),
        field('Error', d.error, 'error-text'),
        field('Attempts', num(d.attempts)),
        field('Dead-lettered', dateTime(d.deadLetteredAt)),
        field('Published', dateTime(d.publishedAt)),
        field('Priority', num(d.priority)),
        d.expiresAt ? field('Expires', dateTime(d.expiresAt)) : null,
        field('Size', `${num(d.bytes)} bytes`),
      ),
      h('div', { class: 'detail-actions' }, this.buttons(d.id)),
      h('h4', {}, 'Message headers'),
      headerTable(d.envelope?.headers, 'dlq-detail-headers'),
      h('h4', {}, 'Transport headers'),
      headerTable(d.headers, 'dlq-detail-transport-headers'),
      h('h4', {}, d.envelope ? 'Envelope' : 'Body'),
      d.envelope
        ? h('pre', { class: 'json', testid: 'dlq-detail-envelope', tabindex: 0 }, JSON.stringify(d.envelope, null, 2))
        : h(
            'div',
            {},
            h('p', { class: 'error-text' }, `Could not decode: ${d.decodeError ?? 'unknown'}`),
            h('pre', { class: 'json', testid: 'dlq-detail-envelope', tabindex: 0 }, d.bodyBase64 ?? ''),
          ),
    ];
  }

  closeDetail() {
    this.selected = undefined;
    this.detail.hidden = true;
    this.detailBody.replaceChildren();
    for (const tr of this.rows.querySelectorAll('tr[aria-selected="true"]')) tr.setAttribute('aria-selected', 'false');
  }

  say(kind, ...parts) {
    this.feedback.dataset.kind = kind;
    this.feedback.replaceChildren(...parts);
  }

  async replay(id, button) {
    button.disabled = true;
    try {
      const res = await api(`v1/dead-letters/${encodeURIComponent(id)}/replay`, { method: 'POST' });
      if (res?.replayed > 0) this.say('ok', 'Replayed ', h('code', {}, id), '.');
      else this.say('warn', 'Nothing replayed: ', h('code', {}, id), ' was already gone.');
      this.forget(id);
    } catch (err) {
      this.sayError(`Replay of ${id} failed`, err);
      button.disabled = false;
    }
    this.onChange();
  }

  async purge(id, button) {
    if (button.dataset.confirm !== 'yes') {
      button.dataset.confirm = 'yes';
      button.textContent = 'Confirm purge';
      button.setAttribute('aria-label', `Confirm purge of ${id}`);
      setTimeout(() => {
        if (!button.isConnected || button.disabled) return;
        delete button.dataset.confirm;
        button.textContent = 'Purge';
        button.removeAttribute('aria-label');
      }, PURGE_CONFIRM_MS);
      return;
    }
    button.disabled = true;
    try {
      const res = await api(`v1/dead-letters/${encodeURIComponent(id)}`, { method: 'DELETE' });
      if (res?.purged > 0) this.say('ok', 'Purged ', h('code', {}, id), '.');
      else this.say('warn', 'Nothing purged: ', h('code', {}, id), ' was already gone.');
      this.forget(id);
    } catch (err) {
      this.sayError(`Purge of ${id} failed`, err);
      button.disabled = false;
    }
    this.onChange();
  }

  sayError(what, err) {
    this.say('error', `${what}: `, h('strong', { class: 'code' }, err.code ?? 'ERROR'), ` ${err.message ?? err}`);
  }

  /** Takes a record off the page at once (the next refresh confirms). */
  forget(id) {
    if (this.selected === id) this.closeDetail();
    for (const tr of this.rows.querySelectorAll('tr[data-id]')) if (tr.dataset.id === id) tr.remove();
    this.rows.dataset.key = '';
  }
}
