/* The pages of the broker's objects: the tables of connections, channels, exchanges and queues
 * (with forms to declare queues and exchanges), and a page for each queue (messages: peek, get with
 * RabbitMQ's ack modes, publish, purge, delete; bindings), exchange (bindings both ways, publish,
 * delete), connection (details, data rates, channels, force close) and channel (details, rates,
 * consumers). Every action goes through the HTTP API, whose rules decide what is allowed. */
import {
  h, append, clear, replace, setText, num, rateText, bytes, yesno, rate, jsonText, monoOrNone, xlabel, seg, xseg,
  stateBadge, api, confirmBox, act, refreshNow, pageHead, panel, foldPanel, kvTable, dataTable,
  input, select, formGrid, form, KeyValueEditor, vhostSelect, linkQueue, linkExchange, clock, dateTime, rangeQuery,
  can, S,
} from './lib.js';
import { Chart, chartData, RATE_SERIES, QUEUED_SERIES, rangeHint } from './charts.js';
import { statGroup, rateValues } from './overview.js';

// ------------------------------------------------------------------ arguments offered in forms
// The queue arguments RabbitMQ's UI offers, by queue type (all of them are ones Usagi supports).
const QUEUE_ARGS = [
  { key: 'x-expires', label: 'Auto expire', type: 'number', types: ['classic', 'quorum'] },
  { key: 'x-message-ttl', label: 'Message TTL', type: 'number', types: ['classic', 'quorum'] },
  { key: 'x-overflow', label: 'Overflow behaviour', type: 'string', value: 'reject-publish', types: ['classic', 'quorum'] },
  { key: 'x-single-active-consumer', label: 'Single active consumer', type: 'boolean', value: 'true', types: ['classic', 'quorum'] },
  { key: 'x-dead-letter-exchange', label: 'Dead letter exchange', type: 'string', types: ['classic', 'quorum'] },
  { key: 'x-dead-letter-routing-key', label: 'Dead letter routing key', type: 'string', types: ['classic', 'quorum'] },
  { key: 'x-max-length', label: 'Max length', type: 'number', types: ['classic', 'quorum'] },
  { key: 'x-max-length-bytes', label: 'Max length bytes', type: 'number', types: ['classic', 'quorum', 'stream'] },
  { key: 'x-max-priority', label: 'Maximum priority', type: 'number', types: ['classic'] },
  { key: 'x-queue-mode', label: 'Lazy mode', type: 'string', value: 'lazy', types: ['classic'] },
  { key: 'x-queue-version', label: 'Version', type: 'number', value: '2', types: ['classic'] },
  { key: 'x-delivery-limit', label: 'Delivery limit', type: 'number', types: ['quorum'] },
  { key: 'x-quorum-initial-group-size', label: 'Initial cluster size', type: 'number', types: ['quorum'] },
  { key: 'x-dead-letter-strategy', label: 'Dead letter strategy', type: 'string', value: 'at-least-once', types: ['quorum'] },
  { key: 'x-max-age', label: 'Max time retention', type: 'string', value: '7D', types: ['stream'] },
  { key: 'x-stream-max-segment-size-bytes', label: 'Max segment size in bytes', type: 'number', types: ['stream'] },
  { key: 'x-initial-cluster-size', label: 'Initial cluster size', type: 'number', types: ['stream'] },
  { key: 'x-queue-leader-locator', label: 'Leader locator', type: 'string', value: 'client-local', types: ['quorum', 'stream'] },
];
const EXCHANGE_ARGS = [{ key: 'alternate-exchange', label: 'Alternate exchange', type: 'string' }];
const EXCHANGE_TYPES = ['direct', 'fanout', 'headers', 'topic', 'x-delayed-message'];

// ------------------------------------------------------------------ tables
const FEATURE_ABBREV = {
  'x-message-ttl': 'TTL', 'x-expires': 'Exp', 'x-max-length': 'Lim', 'x-max-length-bytes': 'Lim B',
  'x-dead-letter-exchange': 'DLX', 'x-dead-letter-routing-key': 'DLK', 'x-max-priority': 'Pri',
  'x-overflow': 'Ovfl', 'x-single-active-consumer': 'SAC', 'x-queue-mode': 'Mode', 'x-delivery-limit': 'DlL',
  'alternate-exchange': 'AE',
};

function featureBadges(item, kind) {
  const out = [];
  if (item.durable) out.push(h('span', { class: 'badge', title: 'durable', text: 'D' }));
  if (item.auto_delete) out.push(h('span', { class: 'badge', title: 'auto-delete', text: 'AD' }));
  if (kind === 'queue' && item.exclusive) out.push(h('span', { class: 'badge', title: 'exclusive', text: 'Excl' }));
  if (kind === 'exchange' && item.internal) out.push(h('span', { class: 'badge', title: 'internal', text: 'I' }));
  for (const k of Object.keys(item.arguments || {})) {
    if (k === 'x-queue-type') continue;
    out.push(h('span', { class: 'badge', title: k + ': ' + JSON.stringify(item.arguments[k]), text: FEATURE_ABBREV[k] || 'Args' }));
  }
  if (item.policy) out.push(h('span', { class: 'badge', title: 'policy', text: 'Pol ' + item.policy }));
  return out;
}

function connLink(name, label) { return h('a', { href: `#/connections/${seg(name)}`, text: label || name }); }
function channelLink(name) { return h('a', { href: `#/channels/${seg(name)}`, text: name }); }

export const TABLES = {
  queues: {
    title: 'Queues', path: '/queues', tableId: 'queues-table', noun: 'queue', defaultSort: 'name',
    columns: [
      { label: 'Name', sort: 'name', cls: 'name', render: (q) => linkQueue(q.vhost, q.name) },
      { label: 'Vhost', sort: 'vhost', render: (q) => q.vhost },
      { label: 'Type', sort: 'type', render: (q) => h('span', { class: 'badge type', text: q.type || 'classic' }) },
      { label: 'Features', render: (q) => featureBadges(q, 'queue') },
      { label: 'State', sort: 'state', render: (q) => stateBadge(q.state) },
      { label: 'Ready', sort: 'messages_ready', num: true, key: 'ready', render: (q) => num(q.messages_ready) },
      { label: 'Unacked', sort: 'messages_unacknowledged', num: true, key: 'unacked', render: (q) => num(q.messages_unacknowledged) },
      { label: 'Total', sort: 'messages', num: true, key: 'total', render: (q) => num(q.messages) },
      { label: 'Consumers', sort: 'consumers', num: true, key: 'consumers', render: (q) => num(q.consumers) },
      { label: 'Incoming', sort: 'message_stats.publish_details.rate', num: true, render: (q) => rateText(rate(q.message_stats, 'publish')) },
      { label: 'Deliver / get', sort: 'message_stats.deliver_get_details.rate', num: true, render: (q) => rateText(rate(q.message_stats, 'deliver_get')) },
      { label: 'Ack', sort: 'message_stats.ack_details.rate', num: true, render: (q) => rateText(rate(q.message_stats, 'ack')) },
    ],
    addPanel: () => AddQueuePanel(),
  },
  exchanges: {
    title: 'Exchanges', path: '/exchanges', tableId: 'exchanges-table', noun: 'exchange', defaultSort: 'name',
    columns: [
      { label: 'Name', sort: 'name', cls: 'name', render: (x) => linkExchange(x.vhost, x.name) },
      { label: 'Vhost', sort: 'vhost', render: (x) => x.vhost },
      { label: 'Type', sort: 'type', render: (x) => h('span', { class: 'badge type', text: x.type }) },
      { label: 'Features', render: (x) => featureBadges(x, 'exchange') },
      { label: 'Message rate in', sort: 'message_stats.publish_in_details.rate', num: true, render: (x) => rateText(rate(x.message_stats, 'publish_in')) },
      { label: 'Message rate out', sort: 'message_stats.publish_out_details.rate', num: true, render: (x) => rateText(rate(x.message_stats, 'publish_out')) },
    ],
    addPanel: () => AddExchangePanel(),
  },
  connections: {
    title: 'Connections', path: '/connections', tableId: 'connections-table', noun: 'connection', defaultSort: 'name',
    columns: [
      { label: 'Name', sort: 'name', cls: 'name', render: (c) => h('span', { title: c.name }, connLink(c.name, c.user_provided_name || c.name),
        c.user_provided_name ? [' ', h('span', { class: 'muted', text: c.name })] : null) },
      { label: 'Vhost', sort: 'vhost', render: (c) => c.vhost },
      { label: 'User', sort: 'user', render: (c) => c.user },
      { label: 'State', sort: 'state', render: (c) => stateBadge(c.state) },
      { label: 'Client', render: (c) => { const p = c.client_properties || {}; return [p.product || '', p.version ? ' ' + p.version : '']; } },
      { label: 'Protocol', sort: 'protocol', render: (c) => [c.protocol, c.ssl ? ' (TLS)' : ''] },
      { label: 'Channels', sort: 'channels', num: true, render: (c) => num(c.channels) },
      { label: 'From client', sort: 'recv_oct_details.rate', num: true, render: (c) => bytes(rate(c, 'recv_oct')) + '/s' },
      { label: 'To client', sort: 'send_oct_details.rate', num: true, render: (c) => bytes(rate(c, 'send_oct')) + '/s' },
    ],
  },
  channels: {
    title: 'Channels', path: '/channels', tableId: 'channels-table', noun: 'channel', defaultSort: 'name',
    columns: [
      { label: 'Channel', sort: 'name', cls: 'name', render: (c) => channelLink(c.name) },
      { label: 'Vhost', sort: 'vhost', render: (c) => c.vhost },
      { label: 'User', sort: 'user', render: (c) => c.user },
      { label: 'Mode', render: (c) => [c.confirm ? h('span', { class: 'badge', title: 'confirm', text: 'C' }) : null, c.transactional ? h('span', { class: 'badge', title: 'transactional', text: 'T' }) : null] },
      { label: 'State', sort: 'state', render: (c) => stateBadge(c.state) },
      { label: 'Consumers', sort: 'consumer_count', num: true, render: (c) => num(c.consumer_count) },
      { label: 'Prefetch', sort: 'prefetch_count', num: true, render: (c) => num(c.prefetch_count) },
      { label: 'Unacked', sort: 'messages_unacknowledged', num: true, render: (c) => num(c.messages_unacknowledged) },
      { label: 'Unconfirmed', sort: 'messages_unconfirmed', num: true, render: (c) => num(c.messages_unconfirmed) },
      { label: 'Publish', sort: 'message_stats.publish_details.rate', num: true, render: (c) => rateText(rate(c.message_stats, 'publish')) },
      { label: 'Deliver / get', sort: 'message_stats.deliver_get_details.rate', num: true, render: (c) => rateText(rate(c.message_stats, 'deliver_get')) },
      { label: 'Ack', sort: 'message_stats.ack_details.rate', num: true, render: (c) => rateText(rate(c.message_stats, 'ack')) },
    ],
  },
};

const PAGE_SIZE = 100;

export function TableView(main, cfg) {
  const st = S.tables[cfg.tableId] || (S.tables[cfg.tableId] = { filter: '', page: 1, sort: cfg.defaultSort, reverse: false });
  const filter = h('input', { type: 'search', placeholder: 'Filter by name', value: st.filter, id: cfg.tableId + '-filter', style: 'width:260px' });
  const count = h('span', { class: 'count' });
  const prev = h('button', { class: 'btn small', type: 'button', text: '‹ Prev' });
  const next = h('button', { class: 'btn small', type: 'button', text: 'Next ›' });
  const pageInfo = h('span', { class: 'muted' });
  const pager = h('span', { class: 'pager' }, prev, pageInfo, next);
  const thead = h('thead');
  const tbody = h('tbody');
  const table = h('table', { class: 'data', id: cfg.tableId }, thead, tbody);

  function renderHead() {
    append(clear(thead), h('tr', null, cfg.columns.map((c) => {
      const th = h('th', { class: [c.num ? 'num' : '', c.sort ? 'sortable' : ''].join(' ').trim() || null, text: c.label });
      if (c.sort) {
        if (st.sort === c.sort) th.appendChild(h('span', { class: 'arrow', text: st.reverse ? '▼' : '▲' }));
        th.addEventListener('click', () => {
          if (st.sort === c.sort) st.reverse = !st.reverse; else { st.sort = c.sort; st.reverse = !!c.num; }
          renderHead();
          refreshNow();
        });
      }
      return th;
    })));
  }

  let debounce = null;
  filter.addEventListener('input', () => {
    clearTimeout(debounce);
    debounce = setTimeout(() => { st.filter = filter.value; st.page = 1; refreshNow(); }, 250);
  });
  prev.addEventListener('click', () => { if (st.page > 1) { st.page--; refreshNow(); } });
  next.addEventListener('click', () => { st.page++; refreshNow(); });

  replace(main,
    pageHead(cfg.title, null),
    h('section', { class: 'panel' },
      h('div', { class: 'toolbar' }, filter, pager, count),
      h('div', { class: 'table-scroll' }, table)),
    cfg.addPanel ? cfg.addPanel() : null);
  renderHead();

  async function update() {
    const q = new URLSearchParams({ page: String(st.page), page_size: String(PAGE_SIZE), name: st.filter,
      sort: st.sort || '', sort_reverse: String(st.reverse) });
    let data;
    try {
      data = await api('GET', cfg.path + '?' + q.toString());
    } catch (e) {
      if (e.status === 400 && st.page > 1) { st.page = 1; return update(); }
      throw e;
    }
    const items = data.items || [];
    if (!items.length) {
      append(clear(tbody), h('tr', null, h('td', { class: 'empty', colspan: String(cfg.columns.length),
        text: st.filter ? `No ${cfg.noun}s match “${st.filter}”.` : `No ${cfg.noun}s.` })));
    } else {
      append(clear(tbody), items.map((it) => h('tr', { 'data-name': it.name, 'data-vhost': it.vhost },
        cfg.columns.map((c) => h('td', { class: [c.num ? 'num' : '', c.cls || ''].join(' ').trim() || null, 'data-col': c.key || null }, c.render(it))))));
    }
    setText(count, data.filtered_count === data.total_count
      ? `${num(data.total_count)} ${cfg.noun}${data.total_count === 1 ? '' : 's'}`
      : `${num(data.filtered_count)} of ${num(data.total_count)} ${cfg.noun}s`);
    pager.hidden = (data.page_count || 0) <= 1;
    prev.disabled = st.page <= 1;
    next.disabled = st.page >= (data.page_count || 1);
    setText(pageInfo, `Page ${data.page} of ${data.page_count || 1}`);
  }
  return { update, destroy() { clearTimeout(debounce); } };
}

// ------------------------------------------------------------------ declare a queue or an exchange
function AddQueuePanel() {
  const vhost = vhostSelect('queue-vhost');
  const type = select('queue-type', [['classic', 'Classic'], ['quorum', 'Quorum'], ['stream', 'Stream']], 'classic');
  const name = input('queue-name-input', { required: true });
  const durable = select('queue-durable', [['true', 'Durable'], ['false', 'Transient']], 'true');
  const autoDelete = select('queue-auto-delete', [['false', 'No'], ['true', 'Yes']], 'false');
  const args = KeyValueEditor('queue-arguments', []);
  const durableRow = formGrid([['Durability', durable]]);
  const adRow = formGrid([['Auto delete', autoDelete, 'If yes, the queue deletes itself once its last consumer has gone.']]);
  function onType() {
    const t = type.value;
    args.setKnown(QUEUE_ARGS.filter((a) => a.types.includes(t)));
    durableRow.hidden = adRow.hidden = t !== 'classic';   // quorum queues and streams are durable, never auto-delete
  }
  type.addEventListener('change', onType);
  onType();
  const f = form('add-queue-form', h('div', null,
    formGrid([['Virtual host', vhost], ['Type', type], ['Name', name]]), durableRow, adRow,
    formGrid([['Arguments', args.el]])), 'Add queue', async () => {
    const n = name.value;
    if (!n.trim()) throw new Error('A queue needs a name.');
    const a = args.value();
    if (type.value !== 'classic') a['x-queue-type'] = type.value;
    const classic = type.value === 'classic';
    await api('PUT', `/queues/${seg(vhost.value)}/${seg(n)}`, {
      durable: classic ? durable.value === 'true' : true, auto_delete: classic ? autoDelete.value === 'true' : false, arguments: a });
    name.value = '';
    args.reset({});
    refreshNow();
    return `Queue “${n}” declared in vhost “${vhost.value}”.`;
  });
  return foldPanel('Add a new queue', f, { id: 'add-queue' });
}

function AddExchangePanel() {
  const vhost = vhostSelect('exchange-vhost');
  const name = input('exchange-name-input', { required: true });
  const type = select('exchange-type', EXCHANGE_TYPES, 'direct');
  const durable = select('exchange-durable', [['true', 'Durable'], ['false', 'Transient']], 'true');
  const autoDelete = select('exchange-auto-delete', [['false', 'No'], ['true', 'Yes']], 'false');
  const internal = select('exchange-internal', [['false', 'No'], ['true', 'Yes']], 'false');
  const args = KeyValueEditor('exchange-arguments', EXCHANGE_ARGS);
  type.addEventListener('change', () => {
    args.setKnown(type.value === 'x-delayed-message'
      ? EXCHANGE_ARGS.concat([{ key: 'x-delayed-type', label: 'Delayed type', type: 'string', value: 'direct' }]) : EXCHANGE_ARGS);
  });
  const f = form('add-exchange-form', formGrid([
    ['Virtual host', vhost], ['Name', name], ['Type', type], ['Durability', durable],
    ['Auto delete', autoDelete, 'If yes, the exchange deletes itself once it has had bindings and the last is gone.'],
    ['Internal', internal, 'If yes, clients cannot publish to it, only other exchanges bound to it.'],
    ['Arguments', args.el],
  ]), 'Add exchange', async () => {
    const n = name.value;
    if (!n.trim()) throw new Error('An exchange needs a name.');
    await api('PUT', `/exchanges/${seg(vhost.value)}/${seg(n)}`, {
      type: type.value, durable: durable.value === 'true', auto_delete: autoDelete.value === 'true',
      internal: internal.value === 'true', arguments: args.value() });
    name.value = '';
    args.reset({});
    refreshNow();
    return `Exchange “${n}” declared in vhost “${vhost.value}”.`;
  });
  return foldPanel('Add a new exchange', f, { id: 'add-exchange' });
}

// ------------------------------------------------------------------ publish form
const INT_PROPS = ['priority', 'timestamp', 'delivery_mode'];
const STR_PROPS = ['content_type', 'content_encoding', 'correlation_id', 'reply_to', 'expiration',
  'message_id', 'type', 'user_id', 'app_id', 'cluster_id'];

function parseLines(text, what) {
  const out = {};
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line) continue;
    const i = line.indexOf('=');
    if (i <= 0) throw new Error(`${what}: expected name=value, got “${line}”`);
    out[line.slice(0, i).trim()] = line.slice(i + 1).trim();
  }
  return out;
}

function headerValue(v) {
  if (/^-?\d+$/.test(v) && Math.abs(Number(v)) <= Number.MAX_SAFE_INTEGER) return Number(v);
  if (v === 'true') return true;
  if (v === 'false') return false;
  return v;
}

function PublishForm(vhost, opts) {
  const exchange = h('select', { id: 'publish-exchange' });
  const rk = h('input', { type: 'text', id: 'publish-routing-key', value: opts.routingKey || '' });
  const dmode = h('select', { id: 'publish-delivery-mode' },
    h('option', { value: '1', text: '1 – non-persistent' }),
    h('option', { value: '2', text: '2 – persistent' }));
  const headers = h('textarea', { id: 'publish-headers', rows: 2, placeholder: 'name=value, one per line' });
  const props = h('textarea', { id: 'publish-properties', rows: 2, placeholder: 'content_type=text/plain\ncorrelation_id=…' });
  const payload = h('textarea', { id: 'publish-payload', rows: 5, placeholder: 'Message body' });
  const enc = h('select', { id: 'publish-encoding' },
    h('option', { value: 'string', text: 'String (UTF-8)' }),
    h('option', { value: 'base64', text: 'Base64' }));
  const result = h('span', { class: 'result', id: 'publish-result', role: 'status' });
  const submit = h('button', { type: 'submit', class: 'btn primary', id: 'publish-submit', text: 'Publish message' });

  const exchanges = opts.exchange !== undefined ? [opts.exchange] : null;
  function fillExchanges(names) {
    const cur = exchange.value;
    append(clear(exchange), names.map((n) => h('option', { value: n === '' ? 'amq.default' : n, text: xlabel(n) })));
    if (cur && names.some((n) => (n === '' ? 'amq.default' : n) === cur)) exchange.value = cur;
  }
  if (exchanges) {
    fillExchanges(exchanges);
    exchange.disabled = true;
  } else {
    fillExchanges(['']);
    api('GET', `/exchanges/${seg(vhost)}?columns=name,internal`).then((xs) => {
      fillExchanges(xs.filter((x) => !x.internal).map((x) => x.name));
    }).catch(() => {});
  }

  const f = h('form', { id: 'publish-form', autocomplete: 'off' },
    h('div', { class: 'form-grid' },
      h('label', { for: 'publish-exchange', text: 'Exchange' }), exchange,
      h('label', { for: 'publish-routing-key', text: 'Routing key' }), rk,
      h('label', { for: 'publish-delivery-mode', text: 'Delivery mode' }), dmode,
      h('label', { class: 'top', for: 'publish-headers', text: 'Headers' }), h('div', null, headers, h('div', { class: 'help', text: 'name=value per line; whole numbers and true/false keep their type.' })),
      h('label', { class: 'top', for: 'publish-properties', text: 'Properties' }), h('div', null, props, h('div', { class: 'help', text: 'content_type, correlation_id, reply_to, expiration, message_id, priority, type, app_id…' })),
      h('label', { class: 'top', for: 'publish-payload', text: 'Payload' }), payload,
      h('label', { for: 'publish-encoding', text: 'Payload encoding' }), enc),
    h('div', { class: 'form-actions' }, submit, result));

  f.addEventListener('submit', async (e) => {
    e.preventDefault();
    result.className = 'result';
    result.textContent = '';
    let properties;
    try {
      properties = { delivery_mode: Number(dmode.value) };
      const extra = parseLines(props.value, 'Properties');
      for (const [k, v] of Object.entries(extra)) {
        if (INT_PROPS.includes(k)) {
          if (!/^\d+$/.test(v)) throw new Error(`Properties: ${k} must be a whole number`);
          properties[k] = Number(v);
        } else if (STR_PROPS.includes(k)) {
          properties[k] = v;
        } else {
          throw new Error(`Properties: unknown property “${k}”`);
        }
      }
      const hdrs = parseLines(headers.value, 'Headers');
      if (Object.keys(hdrs).length) {
        properties.headers = {};
        for (const [k, v] of Object.entries(hdrs)) properties.headers[k] = headerValue(v);
      }
    } catch (err) {
      result.className = 'result err';
      result.textContent = err.message;
      return;
    }
    submit.disabled = true;
    try {
      const r = await api('POST', `/exchanges/${seg(vhost)}/${seg(exchange.value)}/publish`, {
        properties, routing_key: rk.value, payload: payload.value, payload_encoding: enc.value });
      if (r && r.routed) {
        result.className = 'result ok';
        result.textContent = 'Message published and routed.';
      } else {
        result.className = 'result err';
        result.textContent = 'Message published, but not routed: no queue is bound with that routing key.';
      }
      if (opts.onPublished) opts.onPublished();
    } catch (err) {
      result.className = 'result err';
      result.textContent = 'Publish failed: ' + err.message;
    } finally {
      submit.disabled = false;
    }
  });
  return f;
}

// ------------------------------------------------------------------ messages: peek and get
function messageCard(m, i) {
  const p = m.properties || {};
  const rows = [];
  for (const [k, v] of Object.entries(p)) {
    if (k === 'headers') continue;
    rows.push([k, typeof v === 'object' ? JSON.stringify(v) : String(v)]);
  }
  for (const [k, v] of Object.entries(p.headers || {})) rows.push(['headers.' + k, typeof v === 'object' ? JSON.stringify(v) : String(v)]);
  return h('div', { class: 'message', 'data-index': String(i + 1) },
    h('div', { class: 'mhead' },
      h('span', { class: 'idx', text: '#' + (i + 1) }),
      h('span', null, 'Exchange ', h('b', { text: xlabel(m.exchange) })),
      h('span', null, 'Routing key ', h('b', { class: 'mono', text: m.routing_key })),
      h('span', { class: 'redelivered' }, 'Redelivered ', h('b', { text: yesno(m.redelivered) })),
      h('span', null, bytes(m.payload_bytes)),
      typeof m.message_count === 'number' ? h('span', { class: 'muted', text: `${num(m.message_count)} left in the queue` }) : null,
      m.payload_encoding === 'base64' ? h('span', { class: 'badge', text: 'base64' }) : null),
    h('div', { class: 'mbody' },
      h('div', { class: 'props' }, rows.length ? kvTable(rows) : h('span', { class: 'muted', text: 'No properties' })),
      h('pre', { class: 'payload', text: m.payload })));
}

const ACK_MODES = [
  ['ack_requeue_true', 'Nack message requeue true'],
  ['ack_requeue_false', 'Automatic ack'],
  ['reject_requeue_true', 'Reject requeue true'],
  ['reject_requeue_false', 'Reject requeue false'],
];

function MessagesPanel(vhost, name, onChange) {
  // peek: read-only
  const peekCount = h('input', { type: 'number', id: 'peek-count', min: '1', max: '1000', value: '10' });
  const peekButton = h('button', { type: 'button', class: 'btn primary', id: 'peek-button', text: 'Peek messages' });
  const peekStatus = h('span', { class: 'muted', id: 'peek-status' });
  const peekList = h('div', { class: 'messages', id: 'peek-results' });
  peekButton.addEventListener('click', async () => {
    peekButton.disabled = true;
    setText(peekStatus, 'Reading…');
    try {
      const n = Math.max(1, Math.min(1000, parseInt(peekCount.value, 10) || 10));
      const msgs = await api('GET', `/queues/${seg(vhost)}/${seg(name)}/peek?count=${n}&truncate=50000`);
      append(clear(peekList), msgs.map(messageCard));
      setText(peekStatus, msgs.length ? `Showing the first ${msgs.length} message${msgs.length === 1 ? '' : 's'} in delivery order, as of ${clock(Date.now())}.`
        : `The queue had no ready messages at ${clock(Date.now())}.`);
    } catch (e) {
      clear(peekList);
      setText(peekStatus, 'Peek failed: ' + e.message);
    } finally {
      peekButton.disabled = false;
    }
  });

  // get: basic.get, then ack, nack or reject as the ack mode says
  const ackmode = select('get-ackmode', ACK_MODES, 'ack_requeue_true');
  const encoding = select('get-encoding', [['auto', 'Auto string / base64'], ['base64', 'base64']], 'auto');
  const count = h('input', { type: 'number', id: 'get-count', min: '1', max: '1000', value: '1' });
  const truncate = h('input', { type: 'number', id: 'get-truncate', min: '0', value: '50000' });
  const getList = h('div', { class: 'messages', id: 'get-results' });
  const getForm = form('get-form', formGrid([
    ['Ack mode', ackmode, 'Nack or reject with requeue puts the messages back, marked redelivered; automatic ack removes them.'],
    ['Encoding', encoding], ['Messages', count], ['Truncate at', truncate, 'bytes of each payload shown'],
  ]), 'Get messages', async () => {
    const body = { count: Math.max(1, parseInt(count.value, 10) || 1), ackmode: ackmode.value, encoding: encoding.value };
    if (truncate.value !== '') body.truncate = Math.max(0, parseInt(truncate.value, 10) || 0);
    const msgs = await api('POST', `/queues/${seg(vhost)}/${seg(name)}/get`, body);
    append(clear(getList), msgs.map(messageCard));
    if (onChange) onChange();
    const removed = ackmode.value === 'ack_requeue_false' || ackmode.value === 'reject_requeue_false';
    return msgs.length ? `${msgs.length} message${msgs.length === 1 ? '' : 's'} got, ${removed ? 'removed from the queue' : 'requeued'}.`
      : 'The queue is empty.';
  });

  return h('section', { class: 'panel', id: 'messages-panel' },
    h('h2', null, 'Messages', h('span', { class: 'hint', text: 'peek (read-only) or get' })),
    h('div', { class: 'panel-body' },
      h('div', { class: 'grid two msg-modes' },
        h('div', { id: 'peek-panel', class: 'subpanel' },
          h('h3', { text: 'Peek' }),
          h('div', { class: 'notice', text: 'Peeking reads messages without consuming them: nothing is taken, acknowledged or requeued, and no redelivered flag is set.' }),
          h('div', { class: 'peek-bar', style: 'margin-top:12px' }, h('label', { for: 'peek-count', text: 'Messages' }), peekCount, peekButton, peekStatus),
          peekList),
        h('div', { id: 'get-panel', class: 'subpanel' },
          h('h3', { text: 'Get messages' }),
          h('div', { class: 'notice warn', text: 'Getting messages is a destructive action: the messages are taken from the queue and acknowledged, requeued (as redelivered) or rejected as the ack mode says.' }),
          getForm, getList))));
}

// ------------------------------------------------------------------ bindings
function unbindPath(b) {
  return `/bindings/${seg(b.vhost)}/e/${xseg(b.source)}/${b.destination_type === 'queue' ? 'q' : 'e'}/${seg(b.destination)}/${seg(b.properties_key)}`;
}

/* A table of bindings with an Unbind button each (none for the default exchange's implicit ones):
 * `side` is the end the page is about ('queue', 'source' or 'destination'). */
function bindingsTable(id, items, side) {
  const cols = [];
  if (side !== 'source') {
    cols.push({ label: 'From', key: 'source', render: (b) => (b.source === '' ? xlabel('') : linkExchange(b.vhost, b.source)) });
  }
  if (side !== 'queue' && side !== 'destination') {
    cols.push({ label: 'To', key: 'destination', render: (b) => [h('span', { class: 'muted', text: b.destination_type === 'queue' ? 'queue ' : 'exchange ' }),
      b.destination_type === 'queue' ? linkQueue(b.vhost, b.destination) : linkExchange(b.vhost, b.destination)] });
  }
  cols.push({ label: 'Routing key', key: 'routing_key', cls: 'mono', render: (b) => b.routing_key });
  cols.push({ label: 'Arguments', key: 'arguments', cls: 'mono', render: (b) => jsonText(b.arguments) });
  cols.push({ label: '', render: (b) => (b.source === '' ? h('span', { class: 'muted', text: 'implicit' })
    : h('button', { type: 'button', class: 'btn small danger unbind', text: 'Unbind', onclick: async (e) => {
      await act(e.target, () => api('DELETE', unbindPath(b)), `Binding with key “${b.routing_key}” removed.`, refreshNow);
    } })) });
  return dataTable(id, cols, items, 'No bindings.', (b) => ({ 'data-source': b.source, 'data-destination': b.destination, 'data-key': b.routing_key }));
}

/* The form that adds a binding; `fixed` is {source} or {destination, destination_type} of the page. */
function BindingForm(id, vhost, fixed) {
  const rk = input(id + '-routing-key');
  const args = KeyValueEditor(id + '-arguments', [{ key: 'x-match', label: 'x-match (headers)', type: 'string', value: 'all' }]);
  const rows = [];
  let other, otherType = null;
  if (fixed.source !== undefined) {
    otherType = select(id + '-destination-type', [['q', 'To queue'], ['e', 'To exchange']], 'q');
    other = input(id + '-destination', { list: id + '-names' });
    rows.push(['Destination', h('div', { class: 'inline' }, otherType, other)]);
  } else {
    other = input(id + '-source', { list: id + '-names' });
    rows.push(['From exchange', other]);
  }
  const names = h('datalist', { id: id + '-names' });
  function fillNames() {
    const kind = fixed.source !== undefined && otherType.value === 'q' ? 'queues' : 'exchanges';
    api('GET', `/${kind}/${seg(vhost)}?columns=name`).then((xs) => {
      replace(names, xs.map((x) => x.name).filter((n) => n !== '').map((n) => h('option', { value: n })));
    }).catch(() => {});
  }
  if (otherType) otherType.addEventListener('change', fillNames);
  fillNames();
  rows.push(['Routing key', rk], ['Arguments', args.el]);
  return h('div', null, names, form(id, formGrid(rows), 'Bind', async () => {
    const name = other.value.trim();
    if (!name) throw new Error(fixed.source !== undefined ? 'Name the destination.' : 'Name the exchange to bind from.');
    let path;
    if (fixed.source !== undefined) path = `/bindings/${seg(vhost)}/e/${xseg(fixed.source)}/${otherType.value}/${seg(name)}`;
    else path = `/bindings/${seg(vhost)}/e/${seg(name)}/${fixed.destination_type === 'queue' ? 'q' : 'e'}/${seg(fixed.destination)}`;
    await api('POST', path, { routing_key: rk.value, arguments: args.value() });
    other.value = '';
    rk.value = '';
    args.reset({});
    refreshNow();
    return 'Binding added.';
  }));
}

// ------------------------------------------------------------------ queue page
export function QueueView(main, vhost, name) {
  const base = `/queues/${seg(vhost)}/${seg(name)}`;
  const sub = h('span');
  const titleBadges = h('span');
  const purge = h('button', { type: 'button', class: 'btn danger', id: 'purge-button', text: 'Purge messages' });
  const del = h('button', { type: 'button', class: 'btn danger solid', id: 'delete-button', text: 'Delete queue' });
  const stats = statGroup([
    { key: 'messages_ready', label: 'Ready' },
    { key: 'messages_unacknowledged', label: 'Unacked' },
    { key: 'messages', label: 'Total' },
    { key: 'consumers', label: 'Consumers' },
    { key: 'publish_rate', label: 'Incoming', rate: true, color: RATE_SERIES[0].color },
    { key: 'deliver_rate', label: 'Deliver / get', rate: true, color: RATE_SERIES[1].color },
    { key: 'ack_rate', label: 'Ack', rate: true, color: RATE_SERIES[2].color },
  ]);
  const queued = new Chart('Queued messages', rangeHint('this queue'), QUEUED_SERIES, '', 'queue-chart-queued');
  const rates = new Chart('Message rates', rangeHint('this queue'), RATE_SERIES, '/s', 'queue-chart-rates');
  const details = h('div', { class: 'panel-body', id: 'queue-details' });
  const consumers = h('div', { class: 'panel-body flush' });
  const bindings = h('div', { class: 'panel-body flush', id: 'queue-bindings' });
  const body = h('div', null,
    stats.el,
    h('div', { class: 'grid two' }, queued.el, rates.el),
    h('div', { class: 'grid two' },
      panel('Details', details),
      h('div', null,
        panel('Consumers', consumers),
        h('section', { class: 'panel', id: 'bindings-panel' }, h('h2', null, 'Bindings'), bindings,
          h('div', { class: 'panel-body bind-form' }, h('h3', { text: 'Add binding to this queue' }),
            BindingForm('queue-bind', vhost, { destination: name, destination_type: 'queue' }))))),
    MessagesPanel(vhost, name, () => refreshNow()),
    panel('Publish message', h('div', { class: 'panel-body' }, PublishForm(vhost, { routingKey: name, onPublished: () => refreshNow() })),
      { hint: 'to this vhost' }));
  const missing = h('div', { class: 'error-box', hidden: true });
  replace(main,
    pageHead([h('span', { id: 'queue-name', text: name }), titleBadges], sub, [purge, del],
      [h('a', { href: '#/queues', text: 'Queues' }), ' › virtual host ', h('b', { text: vhost })]),
    missing, body);
  queued.draw();
  rates.draw();

  purge.addEventListener('click', async () => {
    if (!await confirmBox('Purge queue', `Remove all ready messages from “${name}”? This cannot be undone.`, 'Purge')) return;
    await act(purge, () => api('DELETE', base + '/contents'), `Queue “${name}” purged.`, refreshNow);
  });
  del.addEventListener('click', async () => {
    if (!await confirmBox('Delete queue', `Delete the queue “${name}” and all its messages?`, 'Delete')) return;
    await act(del, () => api('DELETE', base), `Queue “${name}” deleted.`, () => { location.hash = '#/queues'; });
  });

  async function update() {
    let q;
    try {
      q = await api('GET', base + '?' + rangeQuery(['lengths', 'msg_rates']));
    } catch (e) {
      if (e.status === 404) {
        body.hidden = true; purge.hidden = true; del.hidden = true;
        missing.hidden = false;
        missing.textContent = `The queue “${name}” does not exist in vhost “${vhost}”.`;
        return;
      }
      throw e;
    }
    body.hidden = false; purge.hidden = false; del.hidden = false; missing.hidden = true;
    for (const k of ['messages_ready', 'messages_unacknowledged', 'messages', 'consumers']) stats.cards[k].set(num(q[k]));
    const rv = rateValues(q.message_stats);
    stats.cards.publish_rate.set(rateText(rv.publish));
    stats.cards.deliver_rate.set(rateText(rv.deliver_get));
    stats.cards.ack_rate.set(rateText(rv.ack));
    queued.set(chartData(q, '', QUEUED_SERIES.map((s) => s.key), false),
      { messages: q.messages, messages_ready: q.messages_ready, messages_unacknowledged: q.messages_unacknowledged });
    rates.set(chartData(q.message_stats || {}, '', RATE_SERIES.map((s) => s.key), true), rv);
    replace(titleBadges, h('span', { class: 'badge type', text: q.type || 'classic' }), ' ', stateBadge(q.state));
    setText(sub, `${q.durable ? 'Durable' : 'Transient'} queue on node ${q.node || ''}`);
    replace(details, kvTable([
      ['Virtual host', q.vhost],
      ['Type', q.type],
      ['State', stateBadge(q.state)],
      ['Durable', yesno(q.durable)],
      ['Auto-delete', yesno(q.auto_delete)],
      ['Exclusive', yesno(q.exclusive)],
      ['Arguments', monoOrNone(q.arguments)],
      ['Policy', q.policy || ''],
      ['Operator policy', q.operator_policy || ''],
      ['Effective policy', monoOrNone(q.effective_policy_definition)],
      ['Message bytes', `${bytes(q.message_bytes)} (ready ${bytes(q.message_bytes_ready)}, unacked ${bytes(q.message_bytes_unacknowledged)})`],
      ['Persistent messages', num(q.messages_persistent)],
      ['Consumer capacity', typeof q.consumer_capacity === 'number' ? Math.round(q.consumer_capacity * 100) + '%' : ''],
      ['Memory', bytes(q.memory)],
      ['Idle since', q.idle_since || ''],
    ]));
    const cons = q.consumer_details || [];
    replace(consumers, cons.length
      ? dataTable('queue-consumers', [
        { label: 'Channel', render: (c) => channelLink((c.channel_details || {}).name || '') },
        { label: 'Tag', cls: 'mono', render: (c) => c.consumer_tag },
        { label: 'Ack required', render: (c) => yesno(c.ack_required) },
        { label: 'Prefetch', num: true, render: (c) => num(c.prefetch_count) },
        { label: 'Exclusive', render: (c) => yesno(c.exclusive) },
        { label: 'Active', render: (c) => yesno(c.active !== false) },
      ], cons)
      : h('div', { class: 'panel-body muted', text: 'No consumers.' }));
    replace(bindings, bindingsTable('queue-bindings-table', await api('GET', base + '/bindings'), 'queue'));
  }
  return { update, destroy() { queued.destroy(); rates.destroy(); } };
}

// ------------------------------------------------------------------ exchange page
export function ExchangeView(main, vhost, name) {
  const real = name === 'amq.default' ? '' : name;
  const base = `/exchanges/${seg(vhost)}/${xseg(real)}`;
  const titleBadges = h('span');
  const del = h('button', { type: 'button', class: 'btn danger solid', id: 'delete-exchange-button', text: 'Delete exchange' });
  const builtin = real === '' || real.startsWith('amq.');
  del.hidden = builtin;
  const RATES = [{ key: 'publish_in', label: 'In', color: RATE_SERIES[0].color }, { key: 'publish_out', label: 'Out', color: RATE_SERIES[1].color }];
  const stats = statGroup([
    { key: 'in', label: 'Message rate in', rate: true, color: RATES[0].color },
    { key: 'out', label: 'Message rate out', rate: true, color: RATES[1].color },
  ]);
  const rates = new Chart('Message rates', rangeHint('this exchange'), RATES, '/s', 'exchange-chart-rates');
  const details = h('div', { class: 'panel-body' });
  const bindingsOut = h('div', { class: 'panel-body flush', id: 'exchange-bindings-source' });
  const bindingsIn = h('div', { class: 'panel-body flush', id: 'exchange-bindings-destination' });
  const missing = h('div', { class: 'error-box', hidden: true });
  const body = h('div', null, stats.el,
    h('div', { class: 'grid two' }, rates.el, panel('Details', details)),
    h('section', { class: 'panel', id: 'bindings-panel' }, h('h2', null, 'Bindings from this exchange'), bindingsOut,
      real === '' ? null : h('div', { class: 'panel-body bind-form' }, h('h3', { text: 'Add binding from this exchange' }),
        BindingForm('exchange-bind', vhost, { source: real }))),
    real === '' ? null : panel('Bindings to this exchange', bindingsIn, { hint: 'from other exchanges' }),
    panel('Publish message', h('div', { class: 'panel-body' }, PublishForm(vhost, { exchange: real, onPublished: () => refreshNow() }))));
  replace(main,
    pageHead([h('span', { id: 'exchange-name', text: xlabel(real) }), titleBadges], null, [del],
      [h('a', { href: '#/exchanges', text: 'Exchanges' }), ' › virtual host ', h('b', { text: vhost })]),
    missing, body);
  rates.draw();
  del.addEventListener('click', async () => {
    if (!await confirmBox('Delete exchange', `Delete the exchange “${real}”?`, 'Delete')) return;
    await act(del, () => api('DELETE', base), `Exchange “${real}” deleted.`, () => { location.hash = '#/exchanges'; });
  });

  async function update() {
    let x;
    try {
      x = await api('GET', base + '?' + rangeQuery(['msg_rates']));
    } catch (e) {
      if (e.status === 404) {
        body.hidden = true; del.hidden = true; missing.hidden = false;
        missing.textContent = `The exchange “${real}” does not exist in vhost “${vhost}”.`;
        return;
      }
      throw e;
    }
    const rv = { publish_in: rate(x.message_stats, 'publish_in'), publish_out: rate(x.message_stats, 'publish_out') };
    stats.cards.in.set(rateText(rv.publish_in));
    stats.cards.out.set(rateText(rv.publish_out));
    rates.set(chartData(x.message_stats || {}, '', ['publish_in', 'publish_out'], true), rv);
    replace(titleBadges, h('span', { class: 'badge type', text: x.type }));
    replace(details, kvTable([
      ['Virtual host', x.vhost], ['Type', x.type], ['Durable', yesno(x.durable)],
      ['Auto-delete', yesno(x.auto_delete)], ['Internal', yesno(x.internal)],
      ['Arguments', monoOrNone(x.arguments)], ['Policy', x.policy || ''],
    ]));
    if (real === '') {
      replace(bindingsOut, h('div', { class: 'panel-body muted', text: 'The default exchange routes to the queue named by the routing key: one implicit binding per queue.' }));
    } else {
      replace(bindingsOut, bindingsTable('exchange-bindings-source-table', await api('GET', base + '/bindings/source'), 'source'));
      replace(bindingsIn, bindingsTable('exchange-bindings-destination-table', await api('GET', base + '/bindings/destination'), 'destination'));
    }
  }
  return { update, destroy() { rates.destroy(); } };
}

// ------------------------------------------------------------------ connection page
export function ConnectionView(main, name) {
  const base = `/connections/${seg(name)}`;
  const DATA = [{ key: 'recv_oct', label: 'From client', color: '#2563eb' }, { key: 'send_oct', label: 'To client', color: '#e8590c' }];
  const data = new Chart('Data rates', rangeHint('this connection'), DATA, 'B/s', 'connection-chart-data');
  const details = h('div', { class: 'panel-body', id: 'connection-details' });
  const client = h('div', { class: 'panel-body', id: 'connection-client' });
  const channels = h('div', { class: 'panel-body flush', id: 'connection-channels' });
  const sub = h('span');
  const reason = input('close-reason', { value: 'Closed via management plugin', style: 'width:100%;max-width:480px' });
  const closeButton = h('button', { type: 'submit', class: 'btn danger solid', id: 'close-connection-button', text: 'Force close' });
  const closeForm = h('form', { id: 'close-connection-form' },
    formGrid([['Reason', reason, 'Sent to the client in connection.close (320 CONNECTION_FORCED).']]),
    h('div', { class: 'form-actions' }, closeButton));
  const closePanel = h('section', { class: 'panel', id: 'close-panel', hidden: true },
    h('h2', null, 'Close this connection'), h('div', { class: 'panel-body' }, closeForm));
  closeForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    if (!await confirmBox('Close connection', `Force close “${name}”? The client is told: “${reason.value}”.`, 'Close')) return;
    await act(closeButton, () => api('DELETE', base, undefined, undefined, { 'X-Reason': reason.value }),
      'Connection closed.', () => { location.hash = '#/connections'; });
  });
  const missing = h('div', { class: 'error-box', hidden: true });
  const body = h('div', null,
    h('div', { class: 'grid two' }, panel('Details', details), data.el),
    panel('Client properties', client),
    panel('Channels', channels),
    closePanel);
  replace(main, pageHead(h('span', { id: 'connection-name', text: name }), sub, null,
    [h('a', { href: '#/connections', text: 'Connections' })]), missing, body);
  data.draw();

  async function update() {
    let c;
    try {
      c = await api('GET', base + '?' + rangeQuery(['data_rates']));
    } catch (e) {
      if (e.status === 404) {
        body.hidden = true; missing.hidden = false;
        missing.textContent = `The connection “${name}” is not open (any more).`;
        return;
      }
      throw e;
    }
    body.hidden = false; missing.hidden = true;
    // RabbitMQ: an administrator may close any connection, others only their own
    closePanel.hidden = !(can.admin() || (S.user && c.user === S.user.name));
    setText(sub, `${c.protocol} connection of user ${c.user} to vhost ${c.vhost}`);
    data.set(chartData(c, '', ['recv_oct', 'send_oct'], true), { recv_oct: rate(c, 'recv_oct'), send_oct: rate(c, 'send_oct') });
    replace(details, kvTable([
      ['User', c.user], ['Virtual host', c.vhost], ['State', stateBadge(c.state)],
      ['Client', `${c.peer_host}:${c.peer_port}`], ['Server', `${c.host}:${c.port}`],
      ['Protocol', c.protocol], ['TLS', c.ssl ? `yes (${c.ssl_protocol || ''})` : 'no'],
      ['Authentication', c.auth_mechanism], ['Heartbeat', c.timeout ? `${c.timeout} s` : 'none'],
      ['Frame max', num(c.frame_max) + ' bytes'], ['Channel limit', num(c.channel_max)],
      ['Connected at', dateTime(c.connected_at)],
      ['Received', `${bytes(c.recv_oct)} in ${num(c.recv_cnt)} frames`], ['Sent', `${bytes(c.send_oct)} in ${num(c.send_cnt)} frames`],
    ]));
    const p = c.client_properties || {};
    replace(client, kvTable(Object.keys(p).sort().map((k) => [k, typeof p[k] === 'object' ? h('span', { class: 'mono', text: JSON.stringify(p[k]) }) : String(p[k])])));
    const chs = await api('GET', base + '/channels');
    replace(channels, dataTable('connection-channels-table', [
      { label: 'Channel', cls: 'name', render: (ch) => channelLink(ch.name) },
      { label: 'Mode', render: (ch) => [ch.confirm ? 'confirm ' : '', ch.transactional ? 'tx' : ''] },
      { label: 'State', render: (ch) => stateBadge(ch.state) },
      { label: 'Consumers', num: true, render: (ch) => num(ch.consumer_count) },
      { label: 'Prefetch', num: true, render: (ch) => num(ch.prefetch_count) },
      { label: 'Unacked', num: true, render: (ch) => num(ch.messages_unacknowledged) },
    ], chs, 'No channels.'));
  }
  return { update, destroy() { data.destroy(); } };
}

// ------------------------------------------------------------------ channel page
export function ChannelView(main, name) {
  const base = `/channels/${seg(name)}`;
  const rates = new Chart('Message rates', rangeHint('this channel'), RATE_SERIES, '/s', 'channel-chart-rates');
  const details = h('div', { class: 'panel-body', id: 'channel-details' });
  const consumers = h('div', { class: 'panel-body flush', id: 'channel-consumers' });
  const sub = h('span');
  const missing = h('div', { class: 'error-box', hidden: true });
  const connCrumb = h('span');
  const body = h('div', null, h('div', { class: 'grid two' }, panel('Details', details), rates.el), panel('Consumers', consumers));
  replace(main, pageHead(h('span', { id: 'channel-name', text: name }), sub, null,
    [h('a', { href: '#/channels', text: 'Channels' }), connCrumb]), missing, body);
  rates.draw();

  async function update() {
    let ch;
    try {
      ch = await api('GET', base + '?' + rangeQuery(['msg_rates']));
    } catch (e) {
      if (e.status === 404) {
        body.hidden = true; missing.hidden = false;
        missing.textContent = `The channel “${name}” is not open (any more).`;
        return;
      }
      throw e;
    }
    body.hidden = false; missing.hidden = true;
    const cd = ch.connection_details || {};
    replace(connCrumb, ' › connection ', connLink(cd.name || ''));
    setText(sub, `Channel ${ch.number} of user ${ch.user} in vhost ${ch.vhost}`);
    const ms = ch.message_stats || {};
    const rv = rateValues(ms);
    rates.set(chartData(ms, '', RATE_SERIES.map((s) => s.key), true), rv);
    replace(details, kvTable([
      ['Connection', connLink(cd.name || '')], ['User', ch.user], ['Virtual host', ch.vhost], ['State', stateBadge(ch.state)],
      ['Mode', ch.confirm ? 'confirm' : ch.transactional ? 'transactional' : 'plain'],
      ['Prefetch', `${num(ch.prefetch_count)} per consumer, ${num(ch.global_prefetch_count)} per channel`],
      ['Unacknowledged', num(ch.messages_unacknowledged)], ['Unconfirmed', num(ch.messages_unconfirmed)],
      ['Uncommitted', `${num(ch.messages_uncommitted)} messages, ${num(ch.acks_uncommitted)} acks`],
      ['Published', num(ms.publish || 0)], ['Delivered', num(ms.deliver_get || 0)], ['Acknowledged', num(ms.ack || 0)],
      ['Idle since', ch.idle_since || ''],
    ]));
    const all = await api('GET', ch.vhost !== undefined ? `/consumers/${seg(ch.vhost)}` : '/consumers');
    const mine = all.filter((c) => (c.channel_details || {}).name === ch.name);
    replace(consumers, dataTable('channel-consumers-table', [
      { label: 'Queue', render: (c) => linkQueue(c.queue.vhost, c.queue.name) },
      { label: 'Tag', cls: 'mono', render: (c) => c.consumer_tag },
      { label: 'Ack required', render: (c) => yesno(c.ack_required) },
      { label: 'Exclusive', render: (c) => yesno(c.exclusive) },
      { label: 'Prefetch', num: true, render: (c) => num(c.prefetch_count) },
      { label: 'Active', render: (c) => yesno(c.active !== false) },
    ], mine, 'No consumers on this channel.'));
  }
  return { update, destroy() { rates.destroy(); } };
}

