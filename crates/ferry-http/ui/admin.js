// The Admin view, as RabbitMQ's Admin tab: users (add, delete), virtual
// hosts (add, delete), permissions (set, clear), policies and operator
// policies (add, delete), and vhost and user limits (set and clear,
// `/api/vhost-limits` and `/api/user-limits`). Users, vhosts and
// permissions need the administrator tag; policies are listed for every
// management user and changed by policymakers and administrators (the API
// decides: its answer is shown as it comes, as text).

import { ApiError, call, get, seg, session } from './api.js';
import { h, fill, num, table, field, select, confirmDialog, yesNo } from './dom.js';

const json = (v) => JSON.stringify(v);

/** RabbitMQ's validation texts come HTML-escaped; the page shows text. */
const unescape = (m) => m.replaceAll('&lt;', '<').replaceAll('&gt;', '>').replaceAll('&amp;', '&');

/** What one refresh fetches, by card. */
const PATHS = {
  users: '/api/users',
  vhosts: '/api/vhosts',
  permissions: '/api/permissions',
  policies: '/api/policies',
  ops: '/api/operator-policies',
  vlimits: '/api/vhost-limits',
  ulimits: '/api/user-limits',
};

/** The <datalist>s that suggest user and vhost names in the forms. */
const USER_NAMES = 'admin-user-names';
const VHOST_NAMES = 'admin-vhost-names';

/** A card's table from this refresh's answer (`settled`, rows through
 * `map`), or the API's refusal as a note. */
function section(el, title, settled, columns, empty, map = (rows) => rows) {
  if (settled.status === 'rejected') {
    const e = settled.reason;
    if (e.status === 401) {
      fill(el, h('h2', {}, title), h('p', { class: 'hint' }, e.message));
      return;
    }
    throw e;
  }
  fill(el, h('h2', {}, title),
    h('div', { class: 'table-wrap' }, table(columns, map(settled.value), { empty, label: title })));
}

/**
 * A form card titled (and submitted by a button named) `title`. submit()
 * does the work and resolves the text shown on success; what it throws
 * (the API's refusal, or the form's own check) is shown as text.
 */
function formCard(ui, title, controls, submit, { hint, wide = false } = {}) {
  const result = h('p', { class: 'result', role: 'status' });
  const form = h('form', { class: wide ? 'card wide' : 'card', 'aria-label': title },
    h('h2', {}, title), hint ? h('p', { class: 'hint' }, hint) : null,
    h('div', { class: 'fields' }, controls),
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, title)), result);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    result.className = 'result';
    fill(result);
    try {
      const done = await submit();
      result.className = 'result ok';
      fill(result, done);
      ui.refresh();
    } catch (err) {
      result.className = 'result error';
      fill(result, err instanceof ApiError ? unescape(err.message) : err.message);
    }
  });
  return form;
}

/** A row's delete/clear button: asks `question`, then runs `fn` and toasts `done`. */
function rowButton(ui, text, label, question, fn, done) {
  return h('button', {
    type: 'button',
    class: 'danger small',
    'aria-label': label,
    onClick: async () => {
      if (!await confirmDialog(question, text)) return;
      await ui.act(fn, done);
    },
  }, text);
}

// -- users, virtual hosts, permissions ------------------------------------------

const TAGS = ['administrator', 'monitoring', 'policymaker', 'management', 'impersonator'];

function userColumns(ui, perms) {
  const access = (u) => perms.filter((p) => p.user === u.name).map((p) => p.vhost).join(', ');
  return [
    { label: 'Name', value: (u) => u.name },
    { label: 'Tags', value: (u) => (u.tags || []).join(', ') },
    { label: 'Can access virtual hosts', value: (u) => access(u) || 'No access' },
    { label: 'Has password', value: (u) => yesNo(u.password_hash) },
    {
      label: 'Actions',
      value: (u) => rowButton(ui, 'Delete', `Delete user ${u.name}`,
        `Delete user "${u.name}"?${u.name === session()?.user ? ' You are logged in as this user.' : ''}`,
        () => call('DELETE', `/api/users/${seg(u.name)}`), 'User deleted.'),
    },
  ];
}

function userForm(ui, known) {
  const name = h('input', { name: 'username', required: true, autocomplete: 'off' });
  const secret = (n) => h('input', { name: n, type: 'password', required: true, autocomplete: 'new-password' });
  const [password, again] = [secret('password'), secret('password-again')];
  const tags = h('input', { name: 'tags', placeholder: 'management, policymaker' });
  const pick = (t) => h('button', {
    type: 'button',
    class: 'small plain',
    onClick: () => {
      const now = tags.value.split(',').map((s) => s.trim()).filter(Boolean);
      if (!now.includes(t)) tags.value = [...now, t].join(', ');
    },
  }, t);
  return formCard(ui, 'Add user', [
    field('Username', name), field('Password', password), field('Password (again)', again),
    field('Tags (comma-separated)', tags), h('div', { class: 'picks' }, 'Add tag:', TAGS.map(pick)),
  ], async () => {
    if (password.value !== again.value) throw new Error('The two passwords differ.');
    const user = name.value;
    const existed = known.users.has(user);
    await call('PUT', `/api/users/${seg(user)}`, { password: password.value, tags: tags.value });
    password.value = '';
    again.value = '';
    return `User ${user} ${existed ? 'updated' : 'added'}.`;
  }, { hint: 'An existing name gets the new password and tags.' });
}

function vhostColumns(ui) {
  return [
    { label: 'Name', value: (v) => v.name },
    { label: 'Messages', num: true, value: (v) => num(v.messages) },
    {
      label: 'Actions',
      value: (v) => rowButton(ui, 'Delete', `Delete virtual host ${v.name}`,
        `Delete virtual host "${v.name}" with all its queues, exchanges, messages and permissions?`,
        () => call('DELETE', `/api/vhosts/${seg(v.name)}`), 'Virtual host deleted.'),
    },
  ];
}

function vhostForm(ui, known) {
  const name = h('input', { name: 'name', required: true, autocomplete: 'off' });
  return formCard(ui, 'Add virtual host', [field('Name', name)], async () => {
    const vhost = name.value;
    if (known.vhosts.has(vhost)) return `Virtual host ${vhost} already exists.`;
    await call('PUT', `/api/vhosts/${seg(vhost)}`, {});
    return `Virtual host ${vhost} added.`;
  });
}

function permissionColumns(ui) {
  return [
    { label: 'User', value: (p) => p.user },
    { label: 'Virtual host', value: (p) => p.vhost },
    { label: 'Configure', value: (p) => p.configure },
    { label: 'Write', value: (p) => p.write },
    { label: 'Read', value: (p) => p.read },
    {
      label: 'Actions',
      value: (p) => rowButton(ui, 'Clear', `Clear permissions of ${p.user} in ${p.vhost}`,
        `Clear the permissions of user "${p.user}" in virtual host ${p.vhost}?`,
        () => call('DELETE', `/api/permissions/${seg(p.vhost)}/${seg(p.user)}`), 'Permissions cleared.'),
    },
  ];
}

function permissionForm(ui, known) {
  const user = h('input', { name: 'user', required: true, list: USER_NAMES, autocomplete: 'off' });
  const vhost = h('input', { name: 'vhost', required: true, value: '/', list: VHOST_NAMES, autocomplete: 'off' });
  const regex = (k) => h('input', { name: k, value: '.*', spellcheck: 'false' });
  const [configure, write, read] = ['configure', 'write', 'read'].map(regex);
  return formCard(ui, 'Set permission', [
    field('User', user), field('Virtual host', vhost),
    field('Configure regexp', configure), field('Write regexp', write), field('Read regexp', read),
  ], async () => {
    const [u, v] = [user.value, vhost.value];
    try {
      await call('PUT', `/api/permissions/${seg(v)}/${seg(u)}`,
        { configure: configure.value, write: write.value, read: read.value });
    } catch (err) {
      // The API's 404 names neither; the lists this page holds usually can.
      if (err.status !== 404) throw err;
      if (!known.users.has(u)) throw new Error(`There is no user ${u}.`);
      if (!known.vhosts.has(v)) throw new Error(`There is no virtual host ${v}.`);
      throw err;
    }
    return `Permissions of ${u} in ${v} set.`;
  }, { hint: 'An empty regexp grants nothing; ".*" grants everything.', wide: true });
}

// -- policies -------------------------------------------------------------------

/** The add-policy form; `kind` is "policies" or "operator-policies". */
function policyForm(ui, kind, title) {
  const name = h('input', { name: 'name', required: true });
  const vhost = h('input', { name: 'vhost', value: '/', required: true, list: VHOST_NAMES, autocomplete: 'off' });
  const pattern = h('input', { name: 'pattern', required: true, placeholder: '^orders\\.' });
  const applyTo = select('apply-to', [['all', 'Exchanges and queues'], ['queues', 'Queues'],
    ['exchanges', 'Exchanges'], ['classic_queues', 'Classic queues'],
    ['quorum_queues', 'Quorum queues'], ['streams', 'Streams']], 'all');
  const priority = h('input', { name: 'priority', type: 'number', value: '0' });
  const definition = h('textarea', { name: 'definition', rows: 3, placeholder: '{"max-length": 1000}' });
  return formCard(ui, title, [
    field('Name', name), field('Virtual host', vhost), field('Pattern', pattern),
    field('Apply to', applyTo), field('Priority', priority), field('Definition (JSON)', definition),
  ], async () => {
    let def;
    try {
      def = JSON.parse(definition.value || '{}');
    } catch (err) {
      throw new Error(`The definition is not JSON: ${err.message}`);
    }
    const body = {
      pattern: pattern.value, definition: def, 'apply-to': applyTo.value,
      priority: Number(priority.value) || 0,
    };
    await call('PUT', `/api/${kind}/${seg(vhost.value)}/${seg(name.value)}`, body);
    return `Policy ${name.value} set.`;
  });
}

function policyColumns(ui, kind) {
  return [
    { label: 'Virtual host', value: (p) => p.vhost },
    { label: 'Name', value: (p) => p.name },
    { label: 'Pattern', value: (p) => p.pattern },
    { label: 'Apply to', value: (p) => p['apply-to'] },
    { label: 'Definition', value: (p) => json(p.definition) },
    { label: 'Priority', num: true, value: (p) => String(p.priority) },
    {
      label: 'Actions',
      value: (p) => rowButton(ui, 'Delete', `Delete policy ${p.name}`,
        `Delete policy "${p.name}" in virtual host ${p.vhost}?`,
        () => call('DELETE', `/api/${kind}/${seg(p.vhost)}/${seg(p.name)}`), 'Policy deleted.'),
    },
  ];
}

// -- limits -----------------------------------------------------------------------

/** What a limit applies to: a vhost or a user. */
const LIMITS = {
  vhost: {
    path: 'vhost-limits', key: 'vhost', label: 'Virtual host', title: 'Vhost limits',
    names: ['max-connections', 'max-queues'], list: VHOST_NAMES,
  },
  user: {
    path: 'user-limits', key: 'user', label: 'User', title: 'User limits',
    names: ['max-connections', 'max-channels'], list: USER_NAMES,
  },
};

/** `[{vhost|user, value: {name: n}}]` as one row per limit. A target
 * without limits has `value: []`, as RabbitMQ lists it. */
const limitRows = (key) => (entries) => entries.flatMap((e) =>
  Object.entries(e.value && !Array.isArray(e.value) ? e.value : {})
    .map(([name, value]) => ({ target: e[key], name, value })));

function limitColumns(ui, scope) {
  const { path, label } = LIMITS[scope];
  return [
    { label, value: (l) => l.target },
    { label: 'Limit', value: (l) => l.name },
    { label: 'Value', num: true, value: (l) => String(l.value) },
    {
      label: 'Actions',
      value: (l) => rowButton(ui, 'Clear', `Clear ${scope} limit ${l.name} of ${l.target}`,
        `Clear limit ${l.name} of ${label.toLowerCase()} ${l.target}?`,
        () => call('DELETE', `/api/${path}/${seg(l.target)}/${seg(l.name)}`), 'Limit cleared.'),
    },
  ];
}

/** The set-limit form of a vhost or a user. */
function limitForm(ui, scope) {
  const { path, label, names, list } = LIMITS[scope];
  const target = h('input', {
    name: scope, required: true, value: scope === 'vhost' ? '/' : '', list, autocomplete: 'off',
  });
  const name = select('limit', names.map((n) => [n, n]), names[0]);
  const value = h('input', { name: 'value', type: 'number', step: '1', required: true, value: '' });
  return formCard(ui, `Set ${scope} limit`, [
    field(label, target), field('Limit', name), field('Value (negative: no limit)', value),
  ], async () => {
    await call('PUT', `/api/${path}/${seg(target.value)}/${seg(name.value)}`,
      { value: Number(value.value) });
    return `Limit ${name.value} of ${target.value} set to ${value.value}.`;
  });
}

// -- the view ---------------------------------------------------------------------

export function adminView(ui, root) {
  const card = (id) => h('div', { class: 'card', id: `admin-${id}` });
  const users = card('users');
  const vhosts = card('vhosts');
  const perms = card('permissions');
  const policies = card('policies');
  const ops = card('operator-policies');
  const vlimits = card('vhost-limits');
  const ulimits = card('user-limits');
  const userNames = h('datalist', { id: USER_NAMES });
  const vhostNames = h('datalist', { id: VHOST_NAMES });
  // The names of the last refresh: the forms' suggestions and messages.
  const known = { users: new Set(), vhosts: new Set() };
  fill(root, h('div', { class: 'heading' }, h('h1', {}, 'Admin')), userNames, vhostNames,
    users,
    h('div', { class: 'columns' }, userForm(ui, known), h('div', {}, vhosts, vhostForm(ui, known))),
    perms, permissionForm(ui, known),
    policies,
    h('div', { class: 'columns' }, policyForm(ui, 'policies', 'Add policy'),
      policyForm(ui, 'operator-policies', 'Add operator policy')),
    ops,
    vlimits, ulimits,
    h('div', { class: 'columns' }, limitForm(ui, 'vhost'), limitForm(ui, 'user')));
  let last = '';
  return async () => {
    const keys = Object.keys(PATHS);
    const settled = await Promise.allSettled(keys.map((k) => get(PATHS[k])));
    const got = Object.fromEntries(keys.map((k, i) => [k, settled[i]]));
    // Rebuild only when something changed (keeps a click in progress).
    const key = json(settled.map((r) => (r.status === 'fulfilled' ? r.value : r.reason?.message)));
    if (key === last) return;
    const rows = (k) => (got[k].status === 'fulfilled' ? got[k].value : []);
    for (const [set, list, k] of [[known.users, userNames, 'users'], [known.vhosts, vhostNames, 'vhosts']]) {
      set.clear();
      rows(k).forEach((r) => set.add(r.name));
      fill(list, [...set].map((n) => h('option', { value: n })));
    }
    section(users, 'Users', got.users, userColumns(ui, rows('permissions')), 'No users.');
    section(vhosts, 'Virtual hosts', got.vhosts, vhostColumns(ui), 'No virtual hosts.');
    section(perms, 'Permissions', got.permissions, permissionColumns(ui), 'No permissions.');
    section(policies, 'Policies', got.policies, policyColumns(ui, 'policies'), 'No policies.');
    section(ops, 'Operator policies', got.ops, policyColumns(ui, 'operator-policies'),
      'No operator policies.');
    for (const [scope, el, k] of [['vhost', vlimits, 'vlimits'], ['user', ulimits, 'ulimits']]) {
      section(el, LIMITS[scope].title, got[k], limitColumns(ui, scope), `No ${scope} limits.`,
        limitRows(LIMITS[scope].key));
    }
    last = key;
  };
}
