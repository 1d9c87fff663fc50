// DOM helpers. Everything the page shows goes through h(): strings become
// text nodes, never markup, so names from the broker cannot inject HTML.

/** h('tag', {attrs}, ...children): builds an element. Attributes named
 *  on* are refused (no inline handlers); use `onClick`-style keys instead,
 *  which become listeners. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (/^on[A-Z]/.test(k)) {
      el.addEventListener(k.slice(2).toLowerCase(), v);
    } else if (k === 'class') {
      el.className = v;
    } else if (k === 'dataset') {
      Object.assign(el.dataset, v);
    } else if (k.startsWith('on')) {
      throw new Error(`inline handler attribute ${k}`);
    } else if (k === 'value' || k === 'checked' || k === 'selected') {
      el[k] = v;
    } else {
      el.setAttribute(k, v === true ? '' : String(v));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replaces an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

const intFmt = new Intl.NumberFormat('en-US');

/** 12345 -> "12,345"; missing -> "". */
export function num(n) {
  return typeof n === 'number' ? intFmt.format(n) : '';
}

/** A rate in messages per second. */
export function rate(r) {
  if (typeof r !== 'number') return '';
  return `${r >= 100 ? Math.round(r) : r.toFixed(1)}/s`;
}

/** Bytes as KiB / MiB / GiB. */
export function bytes(n) {
  if (typeof n !== 'number') return '';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${i === 0 ? n : n.toFixed(1)} ${units[i]}`;
}

/** A `*_details.rate` field of `message_stats` (0 when absent). */
export function statRate(obj, key) {
  return obj?.message_stats?.[`${key}_details`]?.rate ?? 0;
}

/** Yes/no for booleans. */
export function yesNo(b) {
  return b ? 'yes' : 'no';
}

/** The default exchange's display name. */
export function exchangeLabel(name) {
  return name === '' ? '(AMQP default)' : name;
}

/** A link to a hash route built from raw path parts (each encoded). */
export function link(parts, text) {
  return h('a', { href: `#/${parts.map(encodeURIComponent).join('/')}` }, text);
}

/**
 * A table. columns: [{label, value: row => string|Node, num: bool}].
 * Empty data shows `empty` in one cell.
 */
export function table(columns, rows, { empty = 'Nothing here.', label } = {}) {
  const head = h('tr', {}, columns.map((c) => h('th', { scope: 'col', class: c.num ? 'num' : '' }, c.label)));
  const body = rows.length === 0
    ? [h('tr', {}, h('td', { colspan: columns.length, class: 'empty' }, empty))]
    : rows.map((r) => h('tr', {}, columns.map((c) => h('td', { class: c.num ? 'num' : '' }, c.value(r)))));
  return h('table', { 'aria-label': label }, h('thead', {}, head), h('tbody', {}, body));
}

/** A labelled form field; returns the wrapper, the control is `.control`. */
export function field(label, control) {
  const id = `f-${Math.random().toString(36).slice(2, 9)}`;
  control.id = id;
  const wrap = h('div', { class: 'field' }, h('label', { for: id }, label), control);
  wrap.control = control;
  return wrap;
}

/** A <select> from [value, text] pairs. */
export function select(name, options, chosen) {
  return h('select', { name }, options.map(([v, t]) => h('option', { value: v, selected: v === chosen }, t)));
}

/** Key/value rows of a definition list. */
export function facts(pairs) {
  return h('dl', { class: 'facts' }, pairs.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
}

/**
 * Asks for confirmation in a modal <dialog> (not window.confirm, so the
 * page never raises a native dialog). Resolves true on confirm.
 */
export function confirmDialog(message, action = 'Confirm') {
  return new Promise((resolve) => {
    const ok = h('button', { type: 'button', class: 'danger', value: 'ok' }, action);
    const cancel = h('button', { type: 'button', value: 'cancel' }, 'Cancel');
    const dlg = h('dialog', { class: 'confirm', 'aria-label': 'Confirm' },
      h('p', {}, message), h('div', { class: 'actions' }, cancel, ok));
    const done = (v) => { dlg.close(); dlg.remove(); resolve(v); };
    ok.addEventListener('click', () => done(true));
    cancel.addEventListener('click', () => done(false));
    dlg.addEventListener('cancel', (e) => { e.preventDefault(); done(false); });
    document.body.append(dlg);
    dlg.showModal();
    cancel.focus();
  });
}

/** Parses "key = value" lines (headers, properties); numbers stay strings
 *  unless `numeric` lists the key. Throws on a line without "=". */
export function parsePairs(text, numeric = []) {
  const out = {};
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line) continue;
    const i = line.indexOf('=');
    if (i < 1) throw new Error(`expected "key = value", got "${line}"`);
    const k = line.slice(0, i).trim();
    const v = line.slice(i + 1).trim();
    out[k] = numeric.includes(k) && /^-?\d+$/.test(v) ? Number(v) : v;
  }
  return out;
}
