// The list and detail views. Each view builds its static parts once and
// returns refresh(), which the app calls on every poll; forms are never
// rebuilt by a refresh, so typing is not lost.

import { call, get, seg } from './api.js';
import {
  h, fill, num, rate, bytes, statRate, yesNo, exchangeLabel, link, table, field,
  select, facts, confirmDialog, parsePairs,
} from './dom.js';

/** A list page: title, a name filter, a table rebuilt on refresh. */
function listView(root, { title, path, columns, empty, filterKey = (r) => r.name }) {
  const filter = h('input', { type: 'search', placeholder: 'Filter by name', 'aria-label': `Filter ${title.toLowerCase()}` });
  const count = h('span', { class: 'count' });
  const holder = h('div', { class: 'table-wrap' });
  let rows = [];
  const draw = () => {
    const f = filter.value.trim().toLowerCase();
    const shown = f ? rows.filter((r) => String(filterKey(r)).toLowerCase().includes(f)) : rows;
    fill(count, `${shown.length} of ${rows.length}`);
    fill(holder, table(columns, shown, { empty, label: title }));
  };
  filter.addEventListener('input', draw);
  fill(root, h('div', { class: 'heading' }, h('h1', {}, title), count, filter), holder);
  let last = '';
  return async () => {
    const fresh = await get(path);
    const key = JSON.stringify(fresh);
    if (key === last) return; // unchanged: keep the rows (and a click in progress)
    last = key;
    rows = fresh;
    draw();
  };
}

const queueLink = (q) => link(['queues', q.vhost, q.name], q.name);

export function queuesView(root) {
  return listView(root, {
    title: 'Queues',
    path: '/api/queues',
    empty: 'No queues.',
    columns: [
      { label: 'Virtual host', value: (q) => q.vhost },
      { label: 'Name', value: queueLink },
      { label: 'Type', value: (q) => q.type },
      { label: 'Node', value: (q) => nodeLabel(q) },
      { label: 'Features', value: (q) => features(q) },
      { label: 'State', value: (q) => q.state },
      { label: 'Ready', num: true, value: (q) => num(q.messages_ready) },
      { label: 'Unacked', num: true, value: (q) => num(q.messages_unacknowledged) },
      { label: 'Total', num: true, value: (q) => num(q.messages) },
      { label: 'Consumers', num: true, value: (q) => num(q.consumers) },
      { label: 'Publish', num: true, value: (q) => rate(statRate(q, 'publish')) },
      { label: 'Deliver / get', num: true, value: (q) => rate(statRate(q, 'deliver_get')) },
      { label: 'Ack', num: true, value: (q) => rate(statRate(q, 'ack')) },
      { label: 'Policy', value: (q) => [q.policy, q.operator_policy].filter(Boolean).join(' / ') },
    ],
  });
}

/** A queue's node as RabbitMQ shows it: a replicated queue's leader and
 *  how many other replicas it has ("n1 +2"). */
function nodeLabel(q) {
  if (!Array.isArray(q.members)) return q.node;
  const others = Math.max(q.members.length - 1, 0);
  return `${q.leader || 'no leader'}${others ? ` +${others}` : ''}`;
}

function features(q) {
  const f = [];
  if (q.durable) f.push('D');
  if (q.auto_delete) f.push('AD');
  if (q.exclusive) f.push('Excl');
  for (const k of Object.keys(q.arguments || {})) f.push(k.replace(/^x-/, ''));
  return h('span', { class: 'features', title: 'D = durable, AD = auto-delete' }, f.join(' '));
}

function argText(args) {
  const entries = Object.entries(args || {});
  return entries.length ? entries.map(([k, v]) => `${k} = ${JSON.stringify(v)}`).join('; ') : 'none';
}

/** Messages shown by a get. */
function messageCards(msgs) {
  if (msgs.length === 0) return h('p', { class: 'empty' }, 'Queue is empty.');
  return msgs.map((m, i) => h('article', { class: 'message', 'aria-label': `Message ${i + 1}` },
    h('h3', {}, `Message ${i + 1}`),
    facts([
      ['Exchange', exchangeLabel(m.exchange)],
      ['Routing key', m.routing_key],
      ['Redelivered', yesNo(m.redelivered)],
      ['Messages left', num(m.message_count)],
      ['Properties', Object.keys(m.properties || {}).length ? JSON.stringify(m.properties) : 'none'],
      ['Payload', `${num(m.payload_bytes)} bytes, encoding: ${m.payload_encoding}`],
    ]),
    h('pre', { class: 'payload' }, m.payload)));
}

/** The publish form; `fixedKey` pins the routing key (a queue's page). */
export function publishForm(ui, vhost, exchange, fixedKey) {
  const key = h('input', { name: 'routing_key', value: fixedKey ?? '', readonly: fixedKey !== undefined });
  const mode = select('delivery_mode', [['1', '1 - non-persistent'], ['2', '2 - persistent']], '1');
  const headers = h('textarea', { name: 'headers', rows: 2, placeholder: 'key = value, one per line' });
  const props = h('textarea', { name: 'properties', rows: 2, placeholder: 'content_type = text/plain' });
  const payload = h('textarea', { name: 'payload', rows: 4 });
  const result = h('p', { class: 'result', role: 'status' });
  const form = h('form', { class: 'card', 'aria-label': 'Publish message' },
    h('h2', {}, 'Publish message'),
    fixedKey !== undefined
      ? h('p', { class: 'hint' }, 'Published to the default exchange, routed to this queue.')
      : null,
    field('Routing key', key), field('Delivery mode', mode),
    field('Headers', headers), field('Properties', props), field('Payload', payload),
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Publish message')), result);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    fill(result);
    let properties;
    try {
      properties = parsePairs(props.value, ['priority', 'timestamp']);
      const hdrs = parsePairs(headers.value);
      if (Object.keys(hdrs).length) properties.headers = hdrs;
    } catch (err) {
      fill(result, err.message);
      result.className = 'result error';
      return;
    }
    properties.delivery_mode = Number(mode.value);
    const x = exchange === '' ? 'amq.default' : exchange;
    try {
      const r = await call('POST', `/api/exchanges/${seg(vhost)}/${seg(x)}/publish`, {
        properties, routing_key: key.value, payload: payload.value, payload_encoding: 'string',
      });
      result.className = r.routed ? 'result ok' : 'result warn';
      fill(result, r.routed ? 'Message published.' : 'Message published, but not routed.');
      ui.refresh();
    } catch (err) {
      result.className = 'result error';
      fill(result, err.message);
    }
  });
  return form;
}

export function queueView(ui, root, vhost, name) {
  const base = `/api/queues/${seg(vhost)}/${seg(name)}`;
  const stats = h('div', { class: 'card' });
  const consumers = h('div', { class: 'card' });
  const bindings = h('div', { class: 'card' });

  const purge = h('button', { type: 'button', class: 'danger' }, 'Purge messages');
  const del = h('button', { type: 'button', class: 'danger' }, 'Delete queue');
  purge.addEventListener('click', async () => {
    if (!await confirmDialog(`Purge every ready message of queue "${name}"?`, 'Purge')) return;
    await ui.act(() => call('DELETE', `${base}/contents`), 'Queue purged.');
  });
  del.addEventListener('click', async () => {
    if (!await confirmDialog(`Delete queue "${name}" and its messages?`, 'Delete')) return;
    if (await ui.act(() => call('DELETE', base), 'Queue deleted.')) ui.go('#/queues');
  });

  const count = h('input', { name: 'count', type: 'number', min: 1, value: '1' });
  const ackmode = select('ackmode', [
    ['ack_requeue_true', 'Nack message requeue true'],
    ['ack_requeue_false', 'Automatic ack'],
    ['reject_requeue_true', 'Reject requeue true'],
    ['reject_requeue_false', 'Reject requeue false'],
  ], 'ack_requeue_true');
  const encoding = select('encoding', [['auto', 'Auto string / base64'], ['base64', 'base64']], 'auto');
  const got = h('div', { class: 'messages', 'aria-live': 'polite' });
  const getForm = h('form', { class: 'card', 'aria-label': 'Get messages' },
    h('h2', {}, 'Get messages'),
    h('p', { class: 'hint' }, 'Requeued messages go back to the queue; the others are removed.'),
    field('Number of messages', count), field('Ack mode', ackmode), field('Encoding', encoding),
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Get messages')), got);
  getForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    try {
      const msgs = await call('POST', `${base}/get`, {
        count: Number(count.value) || 1, ackmode: ackmode.value, encoding: encoding.value, truncate: 50000,
      });
      fill(got, messageCards(msgs));
      ui.refresh();
    } catch (err) {
      fill(got, h('p', { class: 'result error' }, err.message));
    }
  });

  fill(root,
    h('div', { class: 'heading' }, h('h1', {}, 'Queue ', h('span', { class: 'name' }, name)),
      h('span', { class: 'count' }, `in virtual host ${vhost}`)),
    stats,
    h('div', { class: 'card actions-card' }, h('h2', {}, 'Actions'), h('div', { class: 'actions' }, purge, del)),
    h('div', { class: 'columns' }, getForm, publishForm(ui, vhost, '', name)),
    consumers, bindings);

  return async () => {
    const [q, bs] = await Promise.all([get(base), get(`${base}/bindings`)]);
    fill(stats, h('h2', {}, 'Details'), h('div', { class: 'columns' },
      facts([
        ['Type', q.type], ['State', q.state], ['Durable', yesNo(q.durable)],
        ['Auto-delete', yesNo(q.auto_delete)], ['Exclusive', yesNo(q.exclusive)],
        ['Arguments', argText(q.arguments)],
        ['Policy', [q.policy, q.operator_policy && `operator: ${q.operator_policy}`].filter(Boolean).join(', ') || 'none'],
        ['Effective policy', argText(q.effective_policy_definition)],
        ['Node', q.node],
        ...(Array.isArray(q.members) ? [
          ['Leader', q.leader || 'unknown here'],
          ['Replicas', q.members.join(', ')],
          ['Online', (q.online || []).join(', ') || 'unknown here'],
        ] : []),
      ]),
      facts([
        ['Ready', num(q.messages_ready)], ['Unacked', num(q.messages_unacknowledged)],
        ['Total', num(q.messages)], ['Bytes', bytes(q.message_bytes)], ['Consumers', num(q.consumers)],
      ]),
      facts([
        ['Publish', rate(statRate(q, 'publish'))], ['Deliver / get', rate(statRate(q, 'deliver_get'))],
        ['Ack', rate(statRate(q, 'ack'))], ['Redeliver', rate(statRate(q, 'redeliver'))],
      ])));
    fill(consumers, h('h2', {}, 'Consumers'), table([
      { label: 'Channel', value: (c) => c.channel_details?.name },
      { label: 'Consumer tag', value: (c) => c.consumer_tag },
      { label: 'Ack required', value: (c) => yesNo(c.ack_required) },
      { label: 'Exclusive', value: (c) => yesNo(c.exclusive) },
      { label: 'Prefetch', num: true, value: (c) => num(c.prefetch_count) },
    ], q.consumer_details || [], { empty: 'No consumers.', label: 'Consumers' }));
    fill(bindings, h('h2', {}, 'Bindings'), table([
      { label: 'From exchange', value: (b) => (b.source === '' ? exchangeLabel('') : link(['exchanges', vhost, b.source], b.source)) },
      { label: 'Routing key', value: (b) => b.routing_key },
      { label: 'Arguments', value: (b) => argText(b.arguments) },
    ], bs, { empty: 'No bindings.', label: 'Bindings' }));
  };
}

export function exchangesView(root) {
  return listView(root, {
    title: 'Exchanges',
    path: '/api/exchanges',
    empty: 'No exchanges.',
    filterKey: (x) => exchangeLabel(x.name),
    columns: [
      { label: 'Virtual host', value: (x) => x.vhost },
      { label: 'Name', value: (x) => link(['exchanges', x.vhost, x.name === '' ? 'amq.default' : x.name], exchangeLabel(x.name)) },
      { label: 'Type', value: (x) => x.type },
      { label: 'Durable', value: (x) => yesNo(x.durable) },
      { label: 'Auto-delete', value: (x) => yesNo(x.auto_delete) },
      { label: 'Internal', value: (x) => yesNo(x.internal) },
      { label: 'Arguments', value: (x) => argText(x.arguments) },
    ],
  });
}

export function exchangeView(ui, root, vhost, pathName) {
  const name = pathName === 'amq.default' ? '' : pathName;
  const base = `/api/exchanges/${seg(vhost)}/${seg(pathName)}`;
  const info = h('div', { class: 'card' });
  const bindings = h('div', { class: 'card' });
  fill(root,
    h('div', { class: 'heading' }, h('h1', {}, 'Exchange ', h('span', { class: 'name' }, exchangeLabel(name))),
      h('span', { class: 'count' }, `in virtual host ${vhost}`)),
    info, publishForm(ui, vhost, name), bindings);
  return async () => {
    const [x, bs] = await Promise.all([get(base), get(`${base}/bindings/source`)]);
    fill(info, h('h2', {}, 'Details'), facts([
      ['Type', x.type], ['Durable', yesNo(x.durable)], ['Auto-delete', yesNo(x.auto_delete)],
      ['Internal', yesNo(x.internal)], ['Arguments', argText(x.arguments)],
    ]));
    fill(bindings, h('h2', {}, 'Bindings from this exchange'), table([
      { label: 'To', value: (b) => (b.destination_type === 'queue' ? link(['queues', vhost, b.destination], b.destination) : link(['exchanges', vhost, b.destination], b.destination)) },
      { label: 'Type', value: (b) => b.destination_type },
      { label: 'Routing key', value: (b) => b.routing_key },
      { label: 'Arguments', value: (b) => argText(b.arguments) },
    ], bs, { empty: 'No bindings.', label: 'Bindings' }));
  };
}

/** A connection's name, with the one its client chose (connection_name). */
function connLabel(c) {
  return c.user_provided_name ? `${c.name} (${c.user_provided_name})` : c.name;
}

function clientName(c) {
  const p = c.client_properties || {};
  return [p.product, p.version].filter(Boolean).join(' ');
}

export function connectionsView(ui, root) {
  const closeButton = (c) => h('button', {
    type: 'button',
    class: 'danger small',
    'aria-label': `Close connection ${connLabel(c)}`,
    onClick: async () => {
      if (!await confirmDialog(`Close connection ${connLabel(c)}?`, 'Close connection')) return;
      await ui.act(() => call('DELETE', `/api/connections/${seg(c.name)}`, undefined,
        { headers: { 'X-Reason': 'Closed via the Ferry web UI' } }), 'Connection closed.');
    },
  }, 'Close');
  return listView(root, {
    title: 'Connections',
    path: '/api/connections',
    empty: 'No connections.',
    filterKey: connLabel,
    columns: [
      { label: 'Name', value: connLabel },
      { label: 'User', value: (c) => c.user },
      { label: 'Virtual host', value: (c) => c.vhost },
      { label: 'Client', value: clientName },
      { label: 'TLS', value: (c) => yesNo(c.ssl) },
      { label: 'Channels', num: true, value: (c) => num(c.channels) },
      { label: 'Received', num: true, value: (c) => bytes(c.recv_oct) },
      { label: 'Sent', num: true, value: (c) => bytes(c.send_oct) },
      { label: 'Connected', value: (c) => (c.connected_at ? new Date(c.connected_at).toLocaleTimeString() : '') },
      { label: 'Actions', value: closeButton },
    ],
  });
}

export function channelsView(root) {
  return listView(root, {
    title: 'Channels',
    path: '/api/channels',
    empty: 'No channels.',
    columns: [
      { label: 'Channel', value: (c) => c.name },
      { label: 'User', value: (c) => c.user },
      { label: 'Virtual host', value: (c) => c.vhost },
      { label: 'Mode', value: (c) => [c.confirm && 'confirm', c.transactional && 'tx'].filter(Boolean).join(' ') },
      { label: 'Prefetch', num: true, value: (c) => num(c.prefetch_count) },
      { label: 'Unacked', num: true, value: (c) => num(c.messages_unacknowledged) },
      { label: 'Consumers', num: true, value: (c) => num(c.consumer_count) },
    ],
  });
}

export function consumersView(root) {
  return listView(root, {
    title: 'Consumers',
    path: '/api/consumers',
    empty: 'No consumers.',
    filterKey: (c) => `${c.queue?.name} ${c.consumer_tag}`,
    columns: [
      { label: 'Virtual host', value: (c) => c.queue?.vhost },
      { label: 'Queue', value: (c) => link(['queues', c.queue?.vhost, c.queue?.name], c.queue?.name) },
      { label: 'Consumer tag', value: (c) => c.consumer_tag },
      { label: 'Channel', value: (c) => c.channel_details?.name },
      { label: 'Ack required', value: (c) => yesNo(c.ack_required) },
      { label: 'Prefetch', num: true, value: (c) => num(c.prefetch_count) },
    ],
  });
}
