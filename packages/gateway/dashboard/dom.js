/**
 * DOM helpers. Data from the API only ever becomes text nodes or attribute values (never HTML):
 * `h` appends strings as text, and sets attributes by name from code, not from data.
 */

/**
 * Creates an element. `props`: attributes, plus `class`, `text`, `testid` (data-testid),
 * `dataset` (an object) and `on<event>` listeners. Children: nodes, strings (as text), arrays;
 * null, undefined and false are skipped.
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'text') el.textContent = String(value);
    else if (key === 'testid') el.dataset.testid = value;
    else if (key === 'dataset') for (const [k, v] of Object.entries(value)) el.dataset[k] = String(v);
    else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (key === 'style' || key.startsWith('on')) throw new Error(`h: refusing attribute ${key}`);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Number.POSITIVE_INFINITY)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
}

/** The element with `id`; throws when the page lacks it (a mistake in index.html). */
export function byId(id) {
  const el = document.getElementById(id);
  if (!el) throw new Error(`dashboard: no #${id}`);
  return el;
}

const numberFormat = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 });

/** A number for people (thousands separated); a dash when there is none. */
export function num(value) {
  return typeof value === 'number' && Number.isFinite(value) ? numberFormat.format(value) : '—';
}

/** Local time of day (with seconds) of an epoch ms or ISO time; a dash when there is none. */
export function clock(value) {
  if (value === undefined || value === null || value === '') return '—';
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? String(value) : d.toLocaleTimeString(undefined, { hour12: false });
}

/** Full local date and time, for `title` attributes and details. */
export function dateTime(value) {
  if (value === undefined || value === null || value === '') return '';
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? String(value) : d.toLocaleString(undefined, { hour12: false });
}

/** A duration in ms as `3 s`, `4 min 10 s`, `2 h 5 min`, `3 d 4 h`. */
export function duration(ms) {
  if (typeof ms !== 'number' || !Number.isFinite(ms) || ms < 0) return '—';
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  const hours = Math.floor(m / 60);
  if (hours < 48) return `${hours} h ${m % 60} min`;
  return `${Math.floor(hours / 24)} d ${hours % 24} h`;
}

/** Bytes as B / KiB / MiB. */
export function bytes(n) {
  if (typeof n !== 'number' || !Number.isFinite(n)) return '—';
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

/** A status badge (`pass`, `warn`, `fail`, or a saga status). */
export function badge(status, testid) {
  const s = String(status ?? 'unknown');
  return h('span', { class: `badge badge-${/^[a-z-]+$/.test(s) ? s : 'unknown'}`, testid, dataset: { status: s } }, s);
}

/** A table row that spans every column, for "nothing here" and loading states. */
export function emptyRow(columns, text) {
  return h('tr', { class: 'empty' }, h('td', { colspan: columns }, text));
}

/**
 * Replaces the rows of `tbody` unless `key` (a digest of the data) is the one last rendered:
 * tables that did not change keep their DOM, focus and selection.
 */
export function renderRows(tbody, key, rows) {
  if (tbody.dataset.key === key) return false;
  tbody.dataset.key = key;
  tbody.replaceChildren(...rows());
  return true;
}

/** Shows an API error as `CODE: message` in `el` (hides it when `err` is undefined). */
export function showError(el, err) {
  if (!err) {
    el.hidden = true;
    el.replaceChildren();
    return;
  }
  const code = err.code ?? 'ERROR';
  const message = err.message ?? String(err);
  el.replaceChildren(h('strong', { class: 'code' }, code), ': ', message);
  el.hidden = false;
}
