// The Admin view: users, virtual hosts, permissions, policies (add and
// delete), operator policies, and vhost and user limits (set and clear,
// `/api/vhost-limits` and `/api/user-limits`). Users and permissions need
// the administrator tag; policies are listed for every management user and
// changed by policymakers and administrators (the API decides: its answer
// is shown as it comes).

import { call, get, seg } from './api.js';
import { h, fill, num, table, field, select, confirmDialog } from './dom.js';

/** A card whose table is filled from `path` (its rows through `map`), or a
 * note when the API says no. */
async function section(el, title, path, columns, empty, map = (rows) => rows) {
  let rows;
  try {
    rows = map(await get(path));
  } catch (e) {
    if (e.status === 401) {
      fill(el, h('h2', {}, title), h('p', { class: 'hint' }, e.message));
      return;
    }
    throw e;
  }
  fill(el, h('h2', {}, title),
    h('div', { class: 'table-wrap' }, table(columns, rows, { empty, label: title })));
}

const json = (v) => JSON.stringify(v);

/** RabbitMQ's validation texts come HTML-escaped; the page shows text. */
const unescape = (m) => m.replaceAll('&lt;', '<').replaceAll('&gt;', '>').replaceAll('&amp;', '&');

/** What a limit applies to: a vhost or a user. */
const LIMITS = {
  vhost: {
    path: 'vhost-limits', key: 'vhost', label: 'Virtual host', title: 'Vhost limits',
    names: ['max-connections', 'max-queues'],
  },
  user: {
    path: 'user-limits', key: 'user', label: 'User', title: 'User limits',
    names: ['max-connections', 'max-channels'],
  },
};

/** `[{vhost|user, value: {name: n}}]` as one row per limit. A target
 * without limits has `value: []`, as RabbitMQ lists it. */
const limitRows = (key) => (entries) => entries.flatMap((e) =>
  Object.entries(e.value && !Array.isArray(e.value) ? e.value : {})
    .map(([name, value]) => ({ target: e[key], name, value })));

function limitColumns(ui, scope) {
  const { path, label } = LIMITS[scope];
  const del = (l) => h('button', {
    type: 'button',
    class: 'danger small',
    'aria-label': `Clear ${scope} limit ${l.name} of ${l.target}`,
    onClick: async () => {
      if (!await confirmDialog(`Clear limit ${l.name} of ${label.toLowerCase()} ${l.target}?`, 'Clear')) return;
      await ui.act(() => call('DELETE', `/api/${path}/${seg(l.target)}/${seg(l.name)}`), 'Limit cleared.');
    },
  }, 'Clear');
  return [
    { label, value: (l) => l.target },
    { label: 'Limit', value: (l) => l.name },
    { label: 'Value', num: true, value: (l) => String(l.value) },
    { label: 'Actions', value: del },
  ];
}

/** The set-limit form of a vhost or a user. */
function limitForm(ui, scope) {
  const { path, label, names } = LIMITS[scope];
  const title = `Set ${scope} limit`;
  const target = h('input', { name: scope, required: true, value: scope === 'vhost' ? '/' : '' });
  const name = select('limit', names.map((n) => [n, n]), names[0]);
  const value = h('input', { name: 'value', type: 'number', step: '1', required: true, value: '' });
  const result = h('p', { class: 'result', role: 'status' });
  const form = h('form', { class: 'card', 'aria-label': title },
    h('h2', {}, title), field(label, target), field('Limit', name),
    field('Value (negative: no limit)', value),
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, title)), result);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    fill(result);
    try {
      await call('PUT', `/api/${path}/${seg(target.value)}/${seg(name.value)}`,
        { value: Number(value.value) });
      result.className = 'result ok';
      fill(result, `Limit ${name.value} of ${target.value} set to ${value.value}.`);
      ui.refresh();
    } catch (err) {
      result.className = 'result error';
      fill(result, unescape(err.message));
    }
  });
  return form;
}

/** The add-policy form; `kind` is "policies" or "operator-policies". */
function policyForm(ui, kind, title) {
  const name = h('input', { name: 'name', required: true });
  const vhost = h('input', { name: 'vhost', value: '/', required: true });
  const pattern = h('input', { name: 'pattern', required: true, placeholder: '^orders\\.' });
  const applyTo = select('apply-to', [['all', 'Exchanges and queues'], ['queues', 'Queues'],
    ['exchanges', 'Exchanges'], ['classic_queues', 'Classic queues'],
    ['quorum_queues', 'Quorum queues'], ['streams', 'Streams']], 'all');
  const priority = h('input', { name: 'priority', type: 'number', value: '0' });
  const definition = h('textarea', { name: 'definition', rows: 3, placeholder: '{"max-length": 1000}' });
  const result = h('p', { class: 'result', role: 'status' });
  const form = h('form', { class: 'card', 'aria-label': title },
    h('h2', {}, title),
    field('Name', name), field('Virtual host', vhost), field('Pattern', pattern),
    field('Apply to', applyTo), field('Priority', priority), field('Definition (JSON)', definition),
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, title)), result);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    fill(result);
    let def;
    try {
      def = JSON.parse(definition.value || '{}');
    } catch (err) {
      result.className = 'result error';
      fill(result, `The definition is not JSON: ${err.message}`);
      return;
    }
    const body = {
      pattern: pattern.value, definition: def, 'apply-to': applyTo.value,
      priority: Number(priority.value) || 0,
    };
    try {
      await call('PUT', `/api/${kind}/${seg(vhost.value)}/${seg(name.value)}`, body);
      result.className = 'result ok';
      fill(result, `Policy ${name.value} set.`);
      ui.refresh();
    } catch (err) {
      result.className = 'result error';
      fill(result, unescape(err.message));
    }
  });
  return form;
}

function policyColumns(ui, kind) {
  const del = (p) => h('button', {
    type: 'button',
    class: 'danger small',
    'aria-label': `Delete policy ${p.name}`,
    onClick: async () => {
      if (!await confirmDialog(`Delete policy "${p.name}" in virtual host ${p.vhost}?`, 'Delete')) return;
      await ui.act(() => call('DELETE', `/api/${kind}/${seg(p.vhost)}/${seg(p.name)}`), 'Policy deleted.');
    },
  }, 'Delete');
  return [
    { label: 'Virtual host', value: (p) => p.vhost },
    { label: 'Name', value: (p) => p.name },
    { label: 'Pattern', value: (p) => p.pattern },
    { label: 'Apply to', value: (p) => p['apply-to'] },
    { label: 'Definition', value: (p) => json(p.definition) },
    { label: 'Priority', num: true, value: (p) => String(p.priority) },
    { label: 'Actions', value: del },
  ];
}

export function adminView(ui, root) {
  const users = h('div', { class: 'card', id: 'admin-users' });
  const vhosts = h('div', { class: 'card', id: 'admin-vhosts' });
  const perms = h('div', { class: 'card', id: 'admin-permissions' });
  const policies = h('div', { class: 'card', id: 'admin-policies' });
  const ops = h('div', { class: 'card', id: 'admin-operator-policies' });
  const vlimits = h('div', { class: 'card', id: 'admin-vhost-limits' });
  const ulimits = h('div', { class: 'card', id: 'admin-user-limits' });
  fill(root, h('div', { class: 'heading' }, h('h1', {}, 'Admin')),
    h('div', { class: 'columns' }, users, vhosts), perms, policies,
    h('div', { class: 'columns' }, policyForm(ui, 'policies', 'Add policy'),
      policyForm(ui, 'operator-policies', 'Add operator policy')),
    ops,
    vlimits, ulimits,
    h('div', { class: 'columns' }, limitForm(ui, 'vhost'), limitForm(ui, 'user')));
  let last = '';
  return async () => {
    // Rebuild only when something changed (keeps a click in progress).
    const probe = await Promise.allSettled(['/api/users', '/api/vhosts', '/api/permissions',
      '/api/policies', '/api/operator-policies', '/api/vhost-limits', '/api/user-limits',
    ].map((p) => get(p)));
    const key = json(probe.map((r) => (r.status === 'fulfilled' ? r.value : r.reason?.message)));
    if (key === last) return;
    last = key;
    await Promise.all([
      section(users, 'Users', '/api/users', [
        { label: 'Name', value: (u) => u.name },
        { label: 'Tags', value: (u) => (u.tags || []).join(', ') },
      ], 'No users.'),
      section(vhosts, 'Virtual hosts', '/api/vhosts', [
        { label: 'Name', value: (v) => v.name },
        { label: 'Messages', num: true, value: (v) => num(v.messages) },
      ], 'No virtual hosts.'),
      section(perms, 'Permissions', '/api/permissions', [
        { label: 'User', value: (p) => p.user },
        { label: 'Virtual host', value: (p) => p.vhost },
        { label: 'Configure', value: (p) => p.configure },
        { label: 'Write', value: (p) => p.write },
        { label: 'Read', value: (p) => p.read },
      ], 'No permissions.'),
      section(policies, 'Policies', '/api/policies', policyColumns(ui, 'policies'), 'No policies.'),
      section(ops, 'Operator policies', '/api/operator-policies',
        policyColumns(ui, 'operator-policies'), 'No operator policies.'),
      ...['vhost', 'user'].map((scope) => section(scope === 'vhost' ? vlimits : ulimits,
        LIMITS[scope].title, `/api/${LIMITS[scope].path}`, limitColumns(ui, scope),
        `No ${scope} limits.`, limitRows(LIMITS[scope].key))),
    ]);
  };
}
