/* The overview page: object and message totals, the node's message rates and queued messages with
 * their history, the nodes (every member of a cluster with its role, whether it runs and is in
 * sync, its epoch and replication lag, and the cluster's leader changes; a single node alone), the
 * node panel (memory, disk, file descriptors, sockets, alarms, uptime) and the listeners. The
 * nodes and the node panel are for users who may see nodes, as RabbitMQ shows them to monitoring
 * users and administrators. */
import {
  h, append, clear, replace, setText, num, rateText, bytes, duration, rate, api, can, pageHead, panel, kvTable,
  rangeQuery, dataTable, clock, dateTime,
} from './lib.js';
import { Chart, chartData, RATE_SERIES, QUEUED_SERIES, rangeHint } from './charts.js';

function statCard(key, label, opts) {
  opts = opts || {};
  const value = h('div', { class: 'value', text: '–' });
  const card = h('div', { class: 'stat' + (opts.rate ? ' rate' : ''), 'data-stat': key,
    style: opts.color ? '--swatch:' + opts.color : null },
  h('div', { class: 'label', text: label }), value);
  return { el: card, set: (v) => setText(value, v) };
}

export function statGroup(defs) {
  const cards = {};
  const el = h('div', { class: 'stats' }, defs.map((d) => {
    const c = statCard(d.key, d.label, d);
    cards[d.key] = c;
    return c.el;
  }));
  return { el, cards };
}

export function rateValues(ms) {
  const out = {};
  for (const s of RATE_SERIES) out[s.key] = rate(ms || {}, s.key);
  return out;
}

/* A gauge: how close a figure is to its limit; `alarm` paints it red. */
function meter(id, label, fraction, text, sub, alarm) {
  const f = Math.max(0, Math.min(1, fraction || 0));
  const level = alarm ? 'alarm' : f >= 0.8 ? 'warn' : 'ok';
  return h('div', { class: 'meter ' + level, id },
    h('div', { class: 'meter-head' }, h('span', { class: 'meter-label', text: label }), h('span', { class: 'meter-value', text })),
    h('div', { class: 'meter-bar' }, h('i', { style: `width:${(f * 100).toFixed(1)}%` })),
    h('div', { class: 'meter-sub', text: sub }));
}

export function nodePanelBody(n) {
  const memLimit = typeof n.mem_limit === 'number' && n.mem_limit > 0 ? n.mem_limit : null;
  const diskLimit = typeof n.disk_free_limit === 'number' ? n.disk_free_limit : null;
  const alarms = [];
  if (n.mem_alarm) alarms.push('memory');
  if (n.disk_free_alarm) alarms.push('disk');
  return h('div', { class: 'node-panel' },
    h('div', { class: 'meters' },
      meter('node-memory', 'Memory', memLimit ? n.mem_used / memLimit : 0, bytes(n.mem_used),
        memLimit ? `high watermark ${bytes(memLimit)}` : 'no limit', n.mem_alarm),
      meter('node-disk', 'Disk free', diskLimit && n.disk_free ? Math.min(1, diskLimit / n.disk_free) : 0, bytes(n.disk_free),
        diskLimit !== null ? `limit ${bytes(diskLimit)}` : 'no limit', n.disk_free_alarm),
      meter('node-fds', 'File descriptors', n.fd_total ? n.fd_used / n.fd_total : 0, `${num(n.fd_used)}`,
        `of ${num(n.fd_total)} available`, false),
      meter('node-sockets', 'Sockets', n.sockets_total ? n.sockets_used / n.sockets_total : 0, `${num(n.sockets_used)}`,
        `of ${num(n.sockets_total)} available`, false)),
    kvTable([
      ['Node', n.name],
      ['Alarms', alarms.length ? h('span', { id: 'node-alarms' }, alarms.map((a) => h('span', { class: 'badge alarm', text: a + ' alarm' })))
        : h('span', { id: 'node-alarms', class: 'ok-text', text: 'none' })],
      ['Uptime', h('span', { id: 'node-uptime', text: duration(n.uptime) })],
      ['Running', n.running ? 'yes' : 'no (stopped)'],
      ['Processors', num(n.processors)],
      ['Process id', n.os_pid],
      ['Data directory', n.db_dir ? h('span', { class: 'mono', text: n.db_dir }) : ''],
    ], 'node-table'));
}

function yesNo(v, yes, no) {
  if (typeof v !== 'boolean') return h('span', { class: 'muted', text: '–' });
  return h('span', { class: v ? 'ok-text' : 'bad-text', text: v ? (yes || 'yes') : (no || 'no') });
}

/* A node's role: leader, follower, stopped (a member of a cluster that does not run); a node
 * outside a cluster has none (`usagi_role` is absent) and is shown as a single node. */
export function nodeRole(n) { return n.usagi_role || 'single'; }

/* The nodes table (RabbitMQ's overview "Nodes"), from /api/nodes: a cluster's members with their
 * replication figures, or the one node. Resource figures are the serving node's own. */
export function nodesTable(nodes) {
  const rows = nodes.slice().sort((a, b) => String(a.name).localeCompare(String(b.name)));
  const clustered = rows.some((n) => n.usagi_role);
  return dataTable('nodes-table', [
    { label: 'Name', key: 'name', cls: 'name', render: (n) => n.name },
    { label: 'Role', key: 'role', render: (n) => h('span', { class: 'badge role ' + nodeRole(n),
      text: clustered ? nodeRole(n) : 'single node' }) },
    { label: 'State', key: 'state', render: (n) => h('span', { class: 'state ' + (n.running ? 'running' : 'stopped'),
      text: n.running ? 'running' : 'not running' }) },
    { label: 'In sync (ISR)', key: 'in_sync', render: (n) => (clustered ? yesNo(n.usagi_in_sync) : 'n/a') },
    { label: 'Epoch', key: 'epoch', num: true, render: (n) => (n.usagi_epoch === undefined || n.usagi_epoch === null ? '–' : String(n.usagi_epoch)) },
    { label: 'Replication lag', key: 'lag', num: true, render: (n) => (typeof n.usagi_lag === 'number' ? num(n.usagi_lag) : '–') },
    { label: 'Memory', key: 'memory', num: true, render: (n) => (typeof n.mem_used === 'number' ? bytes(n.mem_used) : '–') },
    { label: 'Uptime', key: 'uptime', num: true, render: (n) => (typeof n.uptime === 'number' ? duration(n.uptime) : '–') },
  ], rows, 'No nodes.', (n) => ({ 'data-name': n.name, 'data-role': nodeRole(n), 'data-running': String(!!n.running) }));
}

/* The last leader change as a sentence, from the leader's `usagi_last_leader_change`. */
function leaderChangeText(c) {
  if (!c || typeof c !== 'object') return 'No leader change seen yet.';
  const when = typeof c.time === 'number' ? (Date.now() - c.time < 86400000 ? clock(c.time) : dateTime(c.time)) : '?';
  const from = c.previous && c.previous !== c.leader ? ` from ${c.previous}` : '';
  return `Last leader change at ${when}: ${c.leader} took over${from} (epoch ${c.epoch}).`;
}

export function OverviewView(main) {
  const totals = statGroup([
    { key: 'connections', label: 'Connections' },
    { key: 'channels', label: 'Channels' },
    { key: 'exchanges', label: 'Exchanges' },
    { key: 'queues', label: 'Queues' },
    { key: 'consumers', label: 'Consumers' },
  ]);
  const msgs = statGroup([
    { key: 'messages_ready', label: 'Ready' },
    { key: 'messages_unacknowledged', label: 'Unacked' },
    { key: 'messages', label: 'Total messages' },
    { key: 'publish_rate', label: 'Publish', rate: true, color: RATE_SERIES[0].color },
    { key: 'deliver_rate', label: 'Deliver / get', rate: true, color: RATE_SERIES[1].color },
    { key: 'ack_rate', label: 'Ack', rate: true, color: RATE_SERIES[2].color },
  ]);
  const rates = new Chart('Message rates', rangeHint('whole node'), RATE_SERIES, '/s', 'chart-rates');
  const queued = new Chart('Queued messages', rangeHint('all queues'), QUEUED_SERIES, '', 'chart-queued');
  const monitor = can.monitor();
  const memory = monitor ? new Chart('Node memory', rangeHint('as the memory alarm counts it'),
    [{ key: 'mem_used', label: 'Used', color: '#0891b2' }], 'B', 'chart-memory') : null;
  const cluster = monitor ? statGroup([
    { key: 'nodes_running', label: 'Nodes running' },
    { key: 'nodes_in_sync', label: 'In sync' },
    { key: 'leader', label: 'Leader' },
    { key: 'epoch', label: 'Epoch' },
    { key: 'leader_changes', label: 'Leader changes' },
  ]) : null;
  const clusterPart = h('div', { id: 'cluster-summary', hidden: true },
    h('div', { class: 'section-title', text: 'Cluster' }), cluster ? cluster.el : null);
  const lastChange = h('span', { id: 'leader-change', class: 'hint' });
  const nodesBody = h('div', { class: 'panel-body flush', id: 'nodes-body' });
  const nodeBody = h('div', { class: 'panel-body', id: 'node-body' });
  const listenersBody = h('div', { class: 'panel-body flush table-scroll' });
  const sub = h('span', { text: '' });

  replace(main,
    pageHead('Overview', sub),
    h('div', { class: 'section-title', text: 'Objects' }), totals.el,
    h('div', { class: 'section-title', text: 'Messages' }), msgs.el,
    h('div', { class: 'grid two' }, rates.el, queued.el),
    monitor ? [clusterPart, panel('Nodes', nodesBody, { id: 'nodes-panel', right: lastChange })] : null,
    h('div', { class: 'grid two' },
      panel('Node', nodeBody, { id: 'node-panel', hint: monitor ? 'resources and limits' : null }),
      h('div', null,
        memory ? memory.el : null,
        panel('Listeners', listenersBody))));
  rates.draw();
  queued.draw();
  if (memory) memory.draw();

  const cols = ['cluster_name', 'node', 'usagi_version', 'rabbitmq_version', 'erlang_full_version', 'rates_mode',
    'listeners', 'object_totals', 'queue_totals'];
  for (const s of RATE_SERIES) cols.push(`message_stats.${s.key}`, `message_stats.${s.key}_details`);
  let listenersKey = null;
  async function update() {
    const o = await api('GET', `/overview?${rangeQuery(['lengths', 'msg_rates'])}&columns=${cols.join(',')}`);
    const ot = o.object_totals || {}, qt = o.queue_totals || {}, ms = o.message_stats || {};
    for (const k of Object.keys(totals.cards)) totals.cards[k].set(num(ot[k]));
    for (const k of ['messages_ready', 'messages_unacknowledged', 'messages']) msgs.cards[k].set(num(qt[k]));
    const rv = rateValues(ms);
    msgs.cards.publish_rate.set(rateText(rv.publish));
    msgs.cards.deliver_rate.set(rateText(rv.deliver_get));
    msgs.cards.ack_rate.set(rateText(rv.ack));
    rates.set(chartData(ms, '', RATE_SERIES.map((s) => s.key), true), rv);
    queued.set(chartData(qt, '', QUEUED_SERIES.map((s) => s.key), false),
      { messages: qt.messages, messages_ready: qt.messages_ready, messages_unacknowledged: qt.messages_unacknowledged });
    setText(sub, `${o.cluster_name || o.node} · Usagi ${o.usagi_version || ''} (RabbitMQ ${o.rabbitmq_version || ''} compatible)`);
    if (monitor) {
      const nodes = await api('GET', `/nodes?${rangeQuery(['node_stats'])}`);
      replace(nodesBody, nodesTable(nodes));
      const leader = nodes.find((x) => x.usagi_role === 'leader');
      clusterPart.hidden = !leader;
      if (leader) {
        cluster.cards.nodes_running.set(`${nodes.filter((x) => x.running).length} / ${nodes.length}`);
        cluster.cards.nodes_in_sync.set(num(nodes.filter((x) => x.usagi_in_sync).length));
        cluster.cards.leader.set(leader.name);
        cluster.cards.epoch.set(String(leader.usagi_epoch));
        cluster.cards.leader_changes.set(num(leader.usagi_leader_changes));
        setText(lastChange, leaderChangeText(leader.usagi_last_leader_change));
      } else {
        setText(lastChange, 'a single node, not in a cluster');
      }
      const n = nodes.find((x) => x.name === o.node) || nodes[0];
      if (n) {
        replace(nodeBody, nodePanelBody(n));
        const mem = chartData(n, '', ['mem_used'], false);
        while (mem.mem_used.length && mem.mem_used[0].v === 0) mem.mem_used.shift();   // (before the first sample)
        memory.set(mem, { mem_used: n.mem_used });
      }
    } else if (!nodeBody.firstChild) {
      replace(nodeBody, kvTable([
        ['Node', o.node],
        ['Cluster name', o.cluster_name],
        ['Usagi version', o.usagi_version],
        ['Compatible with', 'RabbitMQ ' + (o.rabbitmq_version || '')],
        ['Runtime', o.erlang_full_version],
      ]), h('p', { class: 'muted small', text: 'Resource figures of the node are shown to monitoring users and administrators.' }));
    }
    const key = JSON.stringify(o.listeners);
    if (key !== listenersKey) {
      listenersKey = key;
      append(clear(listenersBody), h('table', { class: 'data' },
        h('thead', null, h('tr', null, h('th', { text: 'Protocol' }), h('th', { text: 'Bound to' }), h('th', { class: 'num', text: 'Port' }))),
        h('tbody', null, (o.listeners || []).map((l) => h('tr', null,
          h('td', { text: l.protocol }), h('td', { class: 'mono', text: l.ip_address }), h('td', { class: 'num', text: String(l.port) }))))));
    }
  }
  return { update, destroy() { rates.destroy(); queued.destroy(); if (memory) memory.destroy(); } };
}

