// Ferry's web UI: login, hash routing, the overview with its rate chart,
// and one poll loop that keeps the current view fresh.

import {
  call, get, session, saveSession, clearSession, basicToken, whenLoggedOut, ApiError,
} from './api.js';
import { h, fill, num, rate, bytes, statRate, facts, table } from './dom.js';
import { RateChart } from './chart.js';
import {
  queuesView, queueView, exchangesView, exchangeView, connectionsView, channelsView, consumersView,
} from './views.js';
import { adminView } from './admin.js';

/** How often the overview (and so the chart) and the open view are fetched;
 *  the API samples its rates every 5 s. */
const POLL_MS = 5000;

const $ = (id) => document.getElementById(id);

const chart = new RateChart([
  { key: 'publish', label: 'Publish', color: '#2f6fdf' },
  { key: 'deliver_get', label: 'Deliver / get', color: '#1f9d55' },
  { key: 'ack', label: 'Ack', color: '#d97706' },
]);

let refreshView = null; // the open view's refresh()
let timer = null;
let lastOverview = null;

// -- feedback ---------------------------------------------------------------

function toast(text, kind = 'ok') {
  const t = $('toast');
  t.className = `toast ${kind}`;
  fill(t, text);
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.className = 'toast'; fill(t); }, 6000);
}

const ui = {
  /** Runs an action; toasts the outcome; resolves true on success. */
  async act(fn, done) {
    try {
      await fn();
      toast(done);
      ui.refresh();
      return true;
    } catch (e) {
      toast(e.message, 'error');
      return false;
    }
  },
  go(hash) {
    window.location.hash = hash;
  },
  refresh() {
    poll();
  },
};

// -- login --------------------------------------------------------------------

function showLogin(reason) {
  stopPolling();
  $('app').hidden = true;
  $('login').hidden = false;
  fill($('login-error'), reason || '');
  $('login-error').hidden = !reason;
  $('login-user').focus();
}

async function login(e) {
  e.preventDefault();
  const user = $('login-user').value;
  const token = basicToken(user, $('login-pass').value);
  try {
    const me = await call('GET', '/api/whoami', undefined, { token });
    saveSession(me.name, token, me.tags);
    $('login-pass').value = '';
    start();
  } catch (err) {
    showLogin(err.message);
  }
}

function logout() {
  clearSession();
  lastOverview = null;
  showLogin('Logged out.');
}

// -- overview -----------------------------------------------------------------

function stat(label, value, id) {
  return h('div', { class: 'stat' }, h('span', { class: 'stat-label' }, label),
    h('span', { class: 'stat-value', id }, value));
}

function overviewView(root) {
  const totals = h('section', { class: 'stats', 'aria-label': 'Totals' });
  const rates = h('section', { class: 'stats', 'aria-label': 'Message rates' });
  const canvas = h('canvas', { id: 'rate-chart', role: 'img', 'aria-label': 'Message rates chart' });
  const legend = h('ul', { class: 'legend' }, chart.series.map((s) => {
    const sw = h('span', { class: 'swatch' });
    sw.style.background = s.color;
    return h('li', {}, sw, s.label);
  }));
  const node = h('section', { class: 'card', 'aria-label': 'Node' });
  const product = h('span', { class: 'count' });
  fill(root,
    h('div', { class: 'heading' }, h('h1', {}, 'Overview'), product),
    totals,
    h('section', { class: 'card chart-card', 'aria-label': 'Message rates, last 10 minutes' },
      h('h2', {}, 'Message rates, last 10 minutes'), rates, canvas, legend),
    node);
  chart.attach(canvas);

  return async () => {
    const o = lastOverview || await get('/api/overview');
    const q = o.queue_totals || {};
    const t = o.object_totals || {};
    fill(product, `${o.product_name || 'Ferry'} ${o.product_version || ''} on ${o.node}`);
    fill(totals,
      stat('Ready', num(q.messages_ready), 'total-ready'),
      stat('Unacked', num(q.messages_unacknowledged), 'total-unacked'),
      stat('Total messages', num(q.messages), 'total-messages'),
      stat('Connections', num(t.connections), 'total-connections'),
      stat('Channels', num(t.channels), 'total-channels'),
      stat('Queues', num(t.queues), 'total-queues'),
      stat('Exchanges', num(t.exchanges), 'total-exchanges'),
      stat('Consumers', num(t.consumers), 'total-consumers'));
    fill(rates,
      stat('Publish', rate(statRate(o, 'publish')), 'rate-publish'),
      stat('Deliver / get', rate(statRate(o, 'deliver_get')), 'rate-deliver'),
      stat('Ack', rate(statRate(o, 'ack')), 'rate-ack'));
    canvas.setAttribute('aria-label', `Message rates chart: publish ${rate(statRate(o, 'publish'))}, `
      + `deliver / get ${rate(statRate(o, 'deliver_get'))}, ack ${rate(statRate(o, 'ack'))}`);
    await drawNode(node);
  };
}

async function drawNode(el) {
  let nodes;
  try {
    nodes = await get('/api/nodes');
  } catch (e) {
    // Users without the monitoring tag may not see node details.
    if (e instanceof ApiError && e.error === 'not_authorised') {
      fill(el, h('h2', {}, 'Node'), h('p', { class: 'hint' }, 'Node details need the monitoring tag.'));
      return;
    }
    throw e;
  }
  // This node is the one listed in full (the others of a cluster carry
  // only their figures and cluster fields).
  const n = nodes.find((x) => Array.isArray(x.exchange_types)) || nodes[0];
  const alarm = (on) => h('span', { class: on ? 'badge bad' : 'badge good' }, on ? 'alarm' : 'ok');
  const memBar = (x) => {
    const pct = x.mem_limit ? Math.min(100, (100 * x.mem_used) / x.mem_limit) : 0;
    const bar = h('span', { class: 'bar' }, h('span', { class: pct > 90 ? 'fill bad' : 'fill' }));
    bar.firstChild.style.width = `${pct.toFixed(1)}%`;
    return bar;
  };
  const parts = [h('h2', {}, 'Node ', h('span', { class: 'name' }, n.name)), facts([
    ['Memory', h('span', {}, memBar(n), ` ${bytes(n.mem_used)} of ${bytes(n.mem_limit)} `, alarm(n.mem_alarm))],
    ['Disk free', h('span', {}, `${bytes(n.disk_free)} (limit ${bytes(n.disk_free_limit)}) `, alarm(n.disk_free_alarm))],
    ['File descriptors', `${num(n.fd_used)} of ${num(n.fd_total)}`],
    ['Uptime', `${Math.floor(n.uptime / 60000)} min`],
  ])];
  if (n.cluster_id !== undefined) {
    const role = (x) => {
      if (x.metadata_leader) return 'metadata leader';
      return x.voter ? 'voter' : 'joining';
    };
    parts.push(h('h2', {}, 'Cluster'), table([
      { label: 'Node', value: (x) => h('span', { class: 'name' }, x.name) },
      { label: 'State', value: (x) => h('span', { class: x.running ? 'badge good' : 'badge bad' }, x.running ? 'running' : 'down') },
      { label: 'Role', value: role },
      { label: 'Memory', value: (x) => (x.running && x.mem_limit ? h('span', {}, memBar(x), ` ${bytes(x.mem_used)} `, alarm(x.mem_alarm)) : '') },
      { label: 'Disk free', value: (x) => (x.running && x.disk_free !== undefined ? h('span', {}, `${bytes(x.disk_free)} `, alarm(x.disk_free_alarm)) : '') },
      { label: 'Cannot reach', value: (x) => (x.partitions || []).join(', ') },
      { label: 'Address', value: (x) => x.cluster_address },
    ], nodes, { label: 'Cluster nodes' }));
  }
  fill(el, ...parts);
  const alarms = [n.mem_alarm && 'memory', n.disk_free_alarm && 'disk'].filter(Boolean);
  const banner = $('alarm');
  banner.hidden = alarms.length === 0;
  fill(banner, alarms.length ? `Resource alarm: ${alarms.join(', ')}. Publishers are blocked.` : '');
}

// -- routing and polling --------------------------------------------------------

const routes = [
  [/^$/, (root) => overviewView(root), ''],
  [/^queues$/, (root) => queuesView(root), 'queues'],
  [/^queues\/([^/]+)\/([^/]+)$/, (root, v, n) => queueView(ui, root, v, n), 'queues'],
  [/^exchanges$/, (root) => exchangesView(root), 'exchanges'],
  [/^exchanges\/([^/]+)\/([^/]+)$/, (root, v, n) => exchangeView(ui, root, v, n), 'exchanges'],
  [/^connections$/, (root) => connectionsView(ui, root), 'connections'],
  [/^channels$/, (root) => channelsView(root), 'channels'],
  [/^consumers$/, (root) => consumersView(root), 'consumers'],
  [/^admin$/, (root) => adminView(ui, root), 'admin'],
];

function route() {
  if (!session()) return;
  const path = window.location.hash.replace(/^#\/?/, '');
  const root = $('view');
  for (const [re, make, nav] of routes) {
    const m = path.match(re);
    if (!m) continue;
    let args;
    try {
      args = m.slice(1).map(decodeURIComponent);
    } catch {
      break;
    }
    for (const a of document.querySelectorAll('#nav a')) {
      if (a.dataset.nav === nav) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
    refreshView = make(root, ...args);
    poll();
    return;
  }
  refreshView = null;
  fill(root, h('h1', {}, 'Not found'), h('p', {}, 'No such page. ', h('a', { href: '#/' }, 'Back to the overview')));
}

let polling = false;
let pollAgain = false; // a poll was asked for while one ran (a view changed)
async function poll() {
  if (!session() || document.hidden) return; // a background tab costs the broker nothing
  if (polling) {
    pollAgain = true;
    return;
  }
  polling = true;
  const view = refreshView;
  try {
    lastOverview = await get('/api/overview');
    chart.push(Date.now(), {
      publish: statRate(lastOverview, 'publish'),
      deliver_get: statRate(lastOverview, 'deliver_get'),
      ack: statRate(lastOverview, 'ack'),
    });
    if (view) await view();
    fill($('view-error'));
    $('view-error').hidden = true;
  } catch (e) {
    if (session()) {
      const gone = e instanceof ApiError && e.status === 404;
      fill($('view-error'), gone ? 'This object no longer exists. ' : `${e.message} `,
        gone ? h('a', { href: '#/' }, 'Back to the overview') : null);
      $('view-error').hidden = false;
    }
  } finally {
    polling = false;
    if (pollAgain) {
      pollAgain = false;
      poll();
    }
  }
}

function stopPolling() {
  clearInterval(timer);
  timer = null;
}

function start() {
  const s = session();
  $('login').hidden = true;
  $('app').hidden = false;
  fill($('who'), `${s.user}${s.tags?.length ? ` (${s.tags.join(', ')})` : ''}`);
  stopPolling();
  timer = setInterval(poll, POLL_MS);
  route();
}

whenLoggedOut((reason) => showLogin(reason));
window.addEventListener('hashchange', route);
document.addEventListener('visibilitychange', () => poll());
document.addEventListener('DOMContentLoaded', () => {
  $('login-form').addEventListener('submit', login);
  $('logout').addEventListener('click', logout);
  $('refresh').addEventListener('click', () => poll());
  if (session()) start(); else showLogin();
});
