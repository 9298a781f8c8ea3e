/* Usagi management dashboard: plain JavaScript, no build step, no external assets.
 *
 * Talks to the RabbitMQ-compatible HTTP API under /api/ with HTTP basic auth; the credentials
 * live in sessionStorage for the tab's lifetime. Views are chosen by the URL hash:
 *   #/  #/connections  #/channels  #/exchanges  #/queues  #/queues/VHOST/NAME  #/exchanges/VHOST/NAME
 * Charts are drawn on <canvas> from samples this page collects at each refresh.
 */
(function () {
  'use strict';

  const AUTH_KEY = 'usagi.auth';
  const USER_KEY = 'usagi.user';
  const REFRESH_KEY = 'usagi.refresh';
  const HISTORY_POINTS = 180;

  const S = {
    auth: null,          // base64 "user:password"
    user: null,          // /api/whoami
    view: null,          // {update(), destroy()}
    gen: 0,              // bumps on every navigation, so late answers for an old view are dropped
    timer: null,
    refreshMs: 5000,
    history: {},         // chart key -> {t: [], series: {key: []}}
    tables: {},          // table id -> {filter, page, sort, reverse}
  };

  const $ = (sel, root) => (root || document).querySelector(sel);

  // ------------------------------------------------------------------ DOM helpers
  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v === null || v === undefined || v === false) continue;
        if (k === 'class') node.className = v;
        else if (k === 'text') node.textContent = v;
        else if (k === 'style') node.setAttribute('style', v);
        else if (k.startsWith('on') && typeof v === 'function') node.addEventListener(k.slice(2), v);
        else if (k in node && typeof v !== 'string') node[k] = v;
        else node.setAttribute(k, v === true ? '' : v);
      }
    }
    append(node, children);
    return node;
  }

  function append(node, ...children) {
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      node.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }
  function setText(node, text) { if (node && node.textContent !== text) node.textContent = text; }

  // ------------------------------------------------------------------ formatting
  const NF = new Intl.NumberFormat('en-US');
  const NF1 = new Intl.NumberFormat('en-US', { maximumFractionDigits: 1, minimumFractionDigits: 0 });
  const NF2c = new Intl.NumberFormat('en-US', { maximumFractionDigits: 2 });
  const NF2 = new Intl.NumberFormat('en-US', { maximumFractionDigits: 2, minimumFractionDigits: 1 });

  function num(v) { return (typeof v === 'number' && isFinite(v)) ? NF.format(v) : '–'; }
  function rateText(v) { return (typeof v === 'number' && isFinite(v)) ? NF2.format(v) + '/s' : '–'; }
  function bytes(v) {
    if (typeof v !== 'number' || !isFinite(v)) return '–';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return (i === 0 ? NF.format(v) : NF1.format(v)) + ' ' + units[i];
  }
  function compact(v) {
    const a = Math.abs(v);
    if (a >= 1e9) return NF1.format(v / 1e9) + 'G';
    if (a >= 1e6) return NF1.format(v / 1e6) + 'M';
    if (a >= 1e4) return NF1.format(v / 1e3) + 'k';
    return a > 0 && a < 10 ? NF2c.format(v) : NF1.format(v);
  }
  function yesno(v) { return v ? 'yes' : 'no'; }
  function get(obj, path) {
    let cur = obj;
    for (const p of path.split('.')) {
      if (cur === null || cur === undefined) return undefined;
      cur = cur[p];
    }
    return cur;
  }
  function rate(obj, key) {
    const v = get(obj, key + '_details.rate');
    return typeof v === 'number' ? v : 0;
  }
  function jsonText(v) {
    if (v === null || v === undefined) return '';
    if (typeof v === 'object') return Object.keys(v).length ? JSON.stringify(v) : '';
    return String(v);
  }
  function monoOrNone(v) {
    const t = jsonText(v);
    return t ? h('span', { class: 'mono', text: t }) : '';
  }
  function reasonText(r) {
    if (Array.isArray(r)) return r.join(': ');
    if (r && typeof r === 'object') return JSON.stringify(r);
    return String(r || '');
  }
  function xlabel(name) { return name === '' ? '(AMQP default)' : name; }
  function seg(s) { return encodeURIComponent(s); }
  function xseg(name) { return seg(name === '' ? 'amq.default' : name); }

  function stateBadge(state) {
    return h('span', { class: 'state ' + String(state || '').toLowerCase(), text: state || 'unknown' });
  }

  // ------------------------------------------------------------------ API
  class ApiError extends Error {
    constructor(status, reason) { super(reason); this.status = status; }
  }

  async function api(method, path, body, auth) {
    const headers = { 'Authorization': 'Basic ' + (auth || S.auth) };
    const opts = { method, headers, credentials: 'omit', cache: 'no-store' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      opts.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch('api' + path, opts);
    } catch (e) {
      throw new ApiError(0, 'The server cannot be reached');
    }
    const text = await res.text();
    let data = null;
    if (text) { try { data = JSON.parse(text); } catch (e) { data = text; } }
    if (!res.ok) {
      const reason = data && typeof data === 'object' ? reasonText(data.reason || data.error) : '';
      const err = new ApiError(res.status, reason || (res.status + ' ' + res.statusText));
      if (res.status === 401 && !auth && S.auth) sessionExpired(err.message);
      throw err;
    }
    return data;
  }

  function b64(s) {
    const bytesArr = new TextEncoder().encode(s);
    let bin = '';
    for (const b of bytesArr) bin += String.fromCharCode(b);
    return btoa(bin);
  }

  // ------------------------------------------------------------------ toast and confirm
  let toastTimer = null;
  function toast(text, isError) {
    const t = $('#toast');
    t.textContent = text;
    t.className = 'toast' + (isError ? ' err' : '');
    t.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { t.hidden = true; }, 4000);
  }

  function confirmBox(title, text, okLabel) {
    return new Promise((resolve) => {
      const back = $('#modal');
      $('#modal-title').textContent = title;
      $('#modal-text').textContent = text;
      const ok = $('#confirm-ok');
      const cancel = $('#confirm-cancel');
      ok.textContent = okLabel || 'Confirm';
      const done = (v) => {
        back.hidden = true;
        ok.onclick = cancel.onclick = back.onclick = null;
        document.removeEventListener('keydown', onKey);
        resolve(v);
      };
      const onKey = (e) => { if (e.key === 'Escape') done(false); };
      ok.onclick = () => done(true);
      cancel.onclick = () => done(false);
      back.onclick = (e) => { if (e.target === back) done(false); };
      document.addEventListener('keydown', onKey);
      back.hidden = false;
      ok.focus();
    });
  }

  // ------------------------------------------------------------------ charts
  function history(key, seriesKeys) {
    let hst = S.history[key];
    if (!hst) {
      hst = S.history[key] = { t: [], series: {} };
      for (const k of seriesKeys) hst.series[k] = [];
    }
    return hst;
  }

  function pushSample(hst, values) {
    hst.t.push(Date.now());
    for (const k of Object.keys(hst.series)) hst.series[k].push(Number(values[k]) || 0);
    if (hst.t.length > HISTORY_POINTS) {
      hst.t.shift();
      for (const k of Object.keys(hst.series)) hst.series[k].shift();
    }
  }

  /* The top of the y axis: four equal steps of 1, 2, 2.5 or 5 times a power of ten. */
  function niceMax(v, integer) {
    if (!(v > 0)) return integer ? 4 : 1;
    let step = v / 4;
    const exp = Math.pow(10, Math.floor(Math.log10(step)));
    for (const m of [1, 2, 2.5, 5, 10]) if (step <= m * exp) { step = m * exp; break; }
    if (integer) step = Math.max(1, Math.ceil(step));
    return step * 4;
  }

  function clock(t) {
    const d = new Date(t);
    return [d.getHours(), d.getMinutes(), d.getSeconds()].map((x) => String(x).padStart(2, '0')).join(':');
  }

  /* A line chart: `series` is [{key, label, color}], the data a history() record. */
  class Chart {
    constructor(title, hint, series, unit, hstKey) {
      this.series = series;
      this.unit = unit;
      this.hst = history(hstKey, series.map((s) => s.key));
      this.canvas = h('canvas', { class: 'chart', 'data-chart': hstKey });
      this.legendValues = {};
      const legend = h('div', { class: 'legend' }, series.map((s) => {
        const b = h('b', { text: '–' });
        this.legendValues[s.key] = b;
        return h('span', { class: 'item', 'data-series': s.key },
          h('i', { style: 'background:' + s.color }), s.label + ' ', b);
      }));
      this.el = h('section', { class: 'panel chart-panel' },
        h('h2', null, title, h('span', { class: 'hint', text: hint })),
        h('div', { class: 'chart-wrap' }, this.canvas), legend);
      this.onResize = () => this.draw();
      window.addEventListener('resize', this.onResize);
    }

    destroy() { window.removeEventListener('resize', this.onResize); }

    push(values) { pushSample(this.hst, values); this.draw(); }

    draw() {
      const c = this.canvas;
      const w = c.clientWidth, hgt = c.clientHeight;
      if (!w || !hgt) return;
      const dpr = window.devicePixelRatio || 1;
      if (c.width !== Math.round(w * dpr) || c.height !== Math.round(hgt * dpr)) {
        c.width = Math.round(w * dpr);
        c.height = Math.round(hgt * dpr);
      }
      const ctx = c.getContext('2d');
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      ctx.clearRect(0, 0, w, hgt);
      const pad = { l: 52, r: 12, t: 10, b: 24 };
      const pw = w - pad.l - pad.r, ph = hgt - pad.t - pad.b;
      const { t, series } = this.hst;
      const n = t.length;
      for (const s of this.series) {
        const vals = series[s.key];
        setText(this.legendValues[s.key], n ? this.fmt(vals[n - 1]) : '–');
      }
      let max = 0;
      for (const s of this.series) for (const v of series[s.key]) if (v > max) max = v;
      const ymax = niceMax(max * 1.05, this.unit !== '/s');
      const now = n ? t[n - 1] : Date.now();
      const span = Math.max(60000, n > 1 ? now - t[0] : 0);
      const t0 = now - span;
      const X = (tt) => pad.l + ((tt - t0) / span) * pw;
      const Y = (v) => pad.t + ph - (v / ymax) * ph;

      // grid and axis labels
      ctx.font = '11px system-ui, "DejaVu Sans", sans-serif';
      ctx.textBaseline = 'middle';
      ctx.lineWidth = 1;
      for (let i = 0; i <= 4; i++) {
        const v = (ymax / 4) * i;
        const y = Math.round(Y(v)) + 0.5;
        ctx.strokeStyle = i === 0 ? '#cfd5de' : '#eef1f5';
        ctx.beginPath(); ctx.moveTo(pad.l, y); ctx.lineTo(pad.l + pw, y); ctx.stroke();
        ctx.fillStyle = '#667085';
        ctx.textAlign = 'right';
        ctx.fillText(compact(v) + (this.unit === '/s' ? '/s' : ''), pad.l - 8, y);
      }
      ctx.textBaseline = 'top';
      ctx.textAlign = 'center';
      for (let i = 0; i <= 3; i++) {
        const tt = t0 + (span / 3) * i;
        const x = X(tt);
        ctx.textAlign = i === 0 ? 'left' : i === 3 ? 'right' : 'center';
        ctx.fillText(clock(tt), x, pad.t + ph + 7);
      }
      if (n < 2) {
        ctx.textAlign = 'center';
        ctx.textBaseline = 'middle';
        ctx.fillStyle = '#98a2b3';
        ctx.fillText('Collecting samples…', pad.l + pw / 2, pad.t + ph / 2);
        return;
      }
      // series: a soft fill under each line, then the line
      for (const s of this.series) {
        const vals = series[s.key];
        ctx.beginPath();
        for (let i = 0; i < n; i++) {
          const x = X(t[i]), y = Y(vals[i]);
          if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
        }
        ctx.lineTo(X(t[n - 1]), Y(0));
        ctx.lineTo(X(t[0]), Y(0));
        ctx.closePath();
        ctx.globalAlpha = 0.08;
        ctx.fillStyle = s.color;
        ctx.fill();
        ctx.globalAlpha = 1;
      }
      ctx.lineJoin = 'round';
      ctx.lineCap = 'round';
      for (const s of this.series.slice().reverse()) {    // the first series listed ends on top
        const vals = series[s.key];
        ctx.beginPath();
        for (let i = 0; i < n; i++) {
          const x = X(t[i]), y = Y(vals[i]);
          if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
        }
        ctx.strokeStyle = s.color;
        ctx.lineWidth = 2;
        ctx.stroke();
      }
    }

    fmt(v) { return this.unit === '/s' ? rateText(v) : num(v); }
  }

  const RATE_SERIES = [
    { key: 'publish', label: 'Publish', color: '#e8590c' },
    { key: 'deliver_get', label: 'Deliver / get', color: '#2563eb' },
    { key: 'ack', label: 'Ack', color: '#16a34a' },
  ];
  const QUEUED_SERIES = [
    { key: 'messages_ready', label: 'Ready', color: '#7c3aed' },
    { key: 'messages_unacknowledged', label: 'Unacked', color: '#d97706' },
    { key: 'messages', label: 'Total', color: '#0f766e' },
  ];

  function rateValues(ms) {
    const out = {};
    for (const s of RATE_SERIES) out[s.key] = rate(ms || {}, s.key);
    return out;
  }

  // ------------------------------------------------------------------ stat cards
  function statCard(key, label, opts) {
    opts = opts || {};
    const value = h('div', { class: 'value', text: '–' });
    const card = h('div', { class: 'stat' + (opts.rate ? ' rate' : ''), 'data-stat': key,
      style: opts.color ? '--swatch:' + opts.color : null },
      h('div', { class: 'label', text: label }), value);
    return { el: card, set: (v) => setText(value, v) };
  }

  function statGroup(defs) {
    const cards = {};
    const el = h('div', { class: 'stats' }, defs.map((d) => {
      const c = statCard(d.key, d.label, d);
      cards[d.key] = c;
      return c.el;
    }));
    return { el, cards };
  }

  function pageHead(title, sub, actions, crumbs) {
    return h('div', { class: 'page-head' },
      h('div', null,
        crumbs ? h('div', { class: 'crumbs' }, crumbs) : null,
        h('h1', null, title),
        sub ? h('div', { class: 'sub' }, sub) : null),
      actions ? h('div', { class: 'actions' }, actions) : null);
  }

  function kvTable(rows) {
    return h('table', { class: 'kv' }, h('tbody', null, rows.map(([k, v]) =>
      h('tr', null, h('th', { text: k }), h('td', null, v === '' || v === undefined || v === null ? h('span', { class: 'muted', text: '–' }) : v)))));
  }

  // ------------------------------------------------------------------ overview
  function OverviewView(main) {
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
    const rates = new Chart('Message rates', 'messages per second, whole node', RATE_SERIES, '/s', 'overview.rates');
    rates.canvas.id = 'chart-rates';
    const queued = new Chart('Queued messages', 'all queues', QUEUED_SERIES, '', 'overview.queued');
    queued.canvas.id = 'chart-queued';
    const nodeBody = h('div', { class: 'panel-body' });
    const listenersBody = h('div', { class: 'panel-body flush table-scroll' });
    const sub = h('span', { text: '' });

    append(clear(main), [
      pageHead('Overview', sub),
      h('div', { class: 'section-title', text: 'Objects' }), totals.el,
      h('div', { class: 'section-title', text: 'Messages' }), msgs.el,
      h('div', { class: 'grid two' }, rates.el, queued.el),
      h('div', { class: 'grid two' },
        h('section', { class: 'panel' }, h('h2', null, 'Node'), nodeBody),
        h('section', { class: 'panel' }, h('h2', null, 'Listeners'), listenersBody)),
    ]);
    rates.draw();
    queued.draw();

    let nodeKey = null;
    async function update() {
      const o = await api('GET', '/overview');
      const ot = o.object_totals || {}, qt = o.queue_totals || {}, ms = o.message_stats || {};
      for (const k of Object.keys(totals.cards)) totals.cards[k].set(num(ot[k]));
      for (const k of ['messages_ready', 'messages_unacknowledged', 'messages']) msgs.cards[k].set(num(qt[k]));
      const rv = rateValues(ms);
      msgs.cards.publish_rate.set(rateText(rv.publish));
      msgs.cards.deliver_rate.set(rateText(rv.deliver_get));
      msgs.cards.ack_rate.set(rateText(rv.ack));
      rates.push(rv);
      queued.push(qt);
      setText(sub, `${o.cluster_name || o.node} · Usagi ${o.usagi_version || ''} (RabbitMQ ${o.rabbitmq_version || ''} compatible)`);
      const key = JSON.stringify([o.node, o.listeners]);
      if (key !== nodeKey) {
        nodeKey = key;
        append(clear(nodeBody), kvTable([
          ['Node', o.node],
          ['Cluster name', o.cluster_name],
          ['Usagi version', o.usagi_version],
          ['Compatible with', 'RabbitMQ ' + (o.rabbitmq_version || '')],
          ['Runtime', o.erlang_full_version],
          ['Statistics', o.rates_mode],
        ]));
        append(clear(listenersBody), h('table', { class: 'data' },
          h('thead', null, h('tr', null, h('th', { text: 'Protocol' }), h('th', { text: 'Bound to' }), h('th', { class: 'num', text: 'Port' }))),
          h('tbody', null, (o.listeners || []).map((l) => h('tr', null,
            h('td', { text: l.protocol }), h('td', { class: 'mono', text: l.ip_address }), h('td', { class: 'num', text: String(l.port) }))))));
      }
    }
    return { update, destroy() { rates.destroy(); queued.destroy(); } };
  }

  // ------------------------------------------------------------------ tables
  const FEATURE_ABBREV = {
    'x-message-ttl': 'TTL', 'x-expires': 'Exp', 'x-max-length': 'Lim', 'x-max-length-bytes': 'Lim B',
    'x-dead-letter-exchange': 'DLX', 'x-dead-letter-routing-key': 'DLK', 'x-max-priority': 'Pri',
    'x-overflow': 'Ovfl', 'x-single-active-consumer': 'SAC', 'x-queue-mode': 'Mode',
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

  const TABLES = {
    queues: {
      title: 'Queues', path: '/queues', tableId: 'queues-table', noun: 'queue', defaultSort: 'name',
      columns: [
        { label: 'Name', sort: 'name', cls: 'name', render: (q) => h('a', { href: `#/queues/${seg(q.vhost)}/${seg(q.name)}`, text: q.name }) },
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
    },
    exchanges: {
      title: 'Exchanges', path: '/exchanges', tableId: 'exchanges-table', noun: 'exchange', defaultSort: 'name',
      columns: [
        { label: 'Name', sort: 'name', cls: 'name', render: (x) => h('a', { href: `#/exchanges/${seg(x.vhost)}/${xseg(x.name)}`, text: xlabel(x.name) }) },
        { label: 'Vhost', sort: 'vhost', render: (x) => x.vhost },
        { label: 'Type', sort: 'type', render: (x) => h('span', { class: 'badge type', text: x.type }) },
        { label: 'Features', render: (x) => featureBadges(x, 'exchange') },
        { label: 'Message rate in', sort: 'message_stats.publish_in_details.rate', num: true, render: (x) => rateText(rate(x.message_stats, 'publish_in')) },
        { label: 'Message rate out', sort: 'message_stats.publish_out_details.rate', num: true, render: (x) => rateText(rate(x.message_stats, 'publish_out')) },
      ],
    },
    connections: {
      title: 'Connections', path: '/connections', tableId: 'connections-table', noun: 'connection', defaultSort: 'name',
      columns: [
        { label: 'Name', sort: 'name', cls: 'name', render: (c) => h('span', { title: c.name }, c.user_provided_name ? [c.user_provided_name, ' ', h('span', { class: 'muted', text: c.name })] : c.name) },
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
        { label: 'Channel', sort: 'name', cls: 'name', render: (c) => c.name },
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

  function TableView(main, cfg) {
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

    append(clear(main), [
      pageHead(cfg.title, null),
      h('section', { class: 'panel' },
        h('div', { class: 'toolbar' }, filter, pager, count),
        h('div', { class: 'table-scroll' }, table)),
    ]);
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

    const form = h('form', { id: 'publish-form', autocomplete: 'off' },
      h('div', { class: 'form-grid' },
        h('label', { for: 'publish-exchange', text: 'Exchange' }), exchange,
        h('label', { for: 'publish-routing-key', text: 'Routing key' }), rk,
        h('label', { for: 'publish-delivery-mode', text: 'Delivery mode' }), dmode,
        h('label', { class: 'top', for: 'publish-headers', text: 'Headers' }), h('div', null, headers, h('div', { class: 'help', text: 'name=value per line; whole numbers and true/false keep their type.' })),
        h('label', { class: 'top', for: 'publish-properties', text: 'Properties' }), h('div', null, props, h('div', { class: 'help', text: 'content_type, correlation_id, reply_to, expiration, message_id, priority, type, app_id…' })),
        h('label', { class: 'top', for: 'publish-payload', text: 'Payload' }), payload,
        h('label', { for: 'publish-encoding', text: 'Payload encoding' }), enc),
      h('div', { class: 'form-actions' }, submit, result));

    form.addEventListener('submit', async (e) => {
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
    return form;
  }

  // ------------------------------------------------------------------ messages (peek)
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
        m.payload_encoding === 'base64' ? h('span', { class: 'badge', text: 'base64' }) : null),
      h('div', { class: 'mbody' },
        h('div', { class: 'props' }, rows.length ? kvTable(rows) : h('span', { class: 'muted', text: 'No properties' })),
        h('pre', { class: 'payload', text: m.payload })));
  }

  function PeekPanel(vhost, name) {
    const count = h('input', { type: 'number', id: 'peek-count', min: '1', max: '1000', value: '10' });
    const button = h('button', { type: 'button', class: 'btn primary', id: 'peek-button', text: 'Peek messages' });
    const status = h('span', { class: 'muted', id: 'peek-status' });
    const list = h('div', { class: 'messages', id: 'peek-results' });
    button.addEventListener('click', async () => {
      button.disabled = true;
      setText(status, 'Reading…');
      try {
        const n = Math.max(1, Math.min(1000, parseInt(count.value, 10) || 10));
        const msgs = await api('GET', `/queues/${seg(vhost)}/${seg(name)}/peek?count=${n}&truncate=50000`);
        append(clear(list), msgs.map(messageCard));
        setText(status, msgs.length ? `Showing the first ${msgs.length} message${msgs.length === 1 ? '' : 's'} in delivery order, as of ${clock(Date.now())}.`
          : `The queue had no ready messages at ${clock(Date.now())}.`);
      } catch (e) {
        clear(list);
        setText(status, 'Peek failed: ' + e.message);
      } finally {
        button.disabled = false;
      }
    });
    return h('section', { class: 'panel', id: 'peek-panel' },
      h('h2', null, 'Messages', h('span', { class: 'hint', text: 'read-only peek' })),
      h('div', { class: 'panel-body' },
        h('div', { class: 'notice', text: 'Peeking reads messages without consuming them: nothing is taken, acknowledged or requeued, and no redelivered flag is set.' }),
        h('div', { class: 'peek-bar', style: 'margin-top:12px' }, h('label', { for: 'peek-count', text: 'Messages' }), count, button, status),
        list));
  }

  function bindingsTable(items, side) {
    if (!items.length) return h('div', { class: 'panel-body muted', text: 'No bindings.' });
    return h('div', { class: 'table-scroll' }, h('table', { class: 'data' },
      h('thead', null, h('tr', null, h('th', { text: side === 'queue' ? 'From exchange' : 'To' }), h('th', { text: 'Routing key' }), h('th', { text: 'Arguments' }))),
      h('tbody', null, items.map((b) => h('tr', null,
        h('td', null, side === 'queue'
          ? (b.source === '' ? xlabel('') : h('a', { href: `#/exchanges/${seg(b.vhost)}/${xseg(b.source)}`, text: b.source }))
          : h('a', { href: b.destination_type === 'queue' ? `#/queues/${seg(b.vhost)}/${seg(b.destination)}` : `#/exchanges/${seg(b.vhost)}/${xseg(b.destination)}`,
            text: (b.destination_type === 'queue' ? 'queue ' : 'exchange ') + b.destination })),
        h('td', { class: 'mono', text: b.routing_key }),
        h('td', { class: 'mono', text: jsonText(b.arguments) }))))));
  }

  // ------------------------------------------------------------------ queue page
  function QueueView(main, vhost, name) {
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
    const hk = 'queue:' + vhost + '/' + name;
    const queued = new Chart('Queued messages', 'this queue', QUEUED_SERIES, '', hk + '.queued');
    const rates = new Chart('Message rates', 'this queue', RATE_SERIES, '/s', hk + '.rates');
    const details = h('div', { class: 'panel-body', id: 'queue-details' });
    const consumers = h('div', { class: 'panel-body flush' });
    const bindings = h('div', { class: 'panel-body flush' });
    const body = h('div', null,
      stats.el,
      h('div', { class: 'grid two' }, queued.el, rates.el),
      h('div', { class: 'grid two' },
        h('section', { class: 'panel' }, h('h2', null, 'Details'), details),
        h('div', null,
          h('section', { class: 'panel' }, h('h2', null, 'Consumers'), consumers),
          h('section', { class: 'panel' }, h('h2', null, 'Bindings'), bindings))),
      PeekPanel(vhost, name),
      h('section', { class: 'panel' }, h('h2', null, 'Publish message', h('span', { class: 'hint', text: 'to this vhost' })),
        h('div', { class: 'panel-body' }, PublishForm(vhost, { routingKey: name, onPublished: () => refreshNow() }))));
    const missing = h('div', { class: 'error-box', hidden: true });
    append(clear(main), [
      pageHead([h('span', { id: 'queue-name', text: name }), titleBadges], sub, [purge, del],
        [h('a', { href: '#/queues', text: 'Queues' }), ' › virtual host ', h('b', { text: vhost })]),
      missing, body,
    ]);
    queued.draw();
    rates.draw();

    purge.addEventListener('click', async () => {
      if (!await confirmBox('Purge queue', `Remove all ready messages from “${name}”? This cannot be undone.`, 'Purge')) return;
      try {
        await api('DELETE', base + '/contents');
        toast(`Queue “${name}” purged.`);
        refreshNow();
      } catch (e) { toast('Purge failed: ' + e.message, true); }
    });
    del.addEventListener('click', async () => {
      if (!await confirmBox('Delete queue', `Delete the queue “${name}” and all its messages?`, 'Delete')) return;
      try {
        await api('DELETE', base);
        toast(`Queue “${name}” deleted.`);
        location.hash = '#/queues';
      } catch (e) { toast('Delete failed: ' + e.message, true); }
    });

    async function update() {
      let q;
      try {
        q = await api('GET', base);
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
      queued.push(q);
      rates.push(rv);
      append(clear(titleBadges), h('span', { class: 'badge type', text: q.type || 'classic' }), ' ', stateBadge(q.state));
      setText(sub, `${q.durable ? 'Durable' : 'Transient'} queue on node ${q.node || ''}`);
      append(clear(details), kvTable([
        ['Virtual host', q.vhost],
        ['Type', q.type],
        ['State', stateBadge(q.state)],
        ['Durable', yesno(q.durable)],
        ['Auto-delete', yesno(q.auto_delete)],
        ['Exclusive', yesno(q.exclusive)],
        ['Arguments', monoOrNone(q.arguments)],
        ['Policy', q.policy || ''],
        ['Effective policy', monoOrNone(q.effective_policy_definition)],
        ['Message bytes', `${bytes(q.message_bytes)} (ready ${bytes(q.message_bytes_ready)}, unacked ${bytes(q.message_bytes_unacknowledged)})`],
        ['Persistent messages', num(q.messages_persistent)],
        ['Consumer capacity', typeof q.consumer_capacity === 'number' ? Math.round(q.consumer_capacity * 100) + '%' : ''],
        ['Memory', bytes(q.memory)],
        ['Idle since', q.idle_since || ''],
      ]));
      const cons = q.consumer_details || [];
      append(clear(consumers), cons.length
        ? h('div', { class: 'table-scroll' }, h('table', { class: 'data' },
          h('thead', null, h('tr', null, ['Channel', 'Tag', 'Ack required', 'Prefetch', 'Exclusive', 'Active'].map((t) => h('th', { text: t })))),
          h('tbody', null, cons.map((c) => h('tr', null,
            h('td', { text: (c.channel_details || {}).name || '' }), h('td', { class: 'mono', text: c.consumer_tag }),
            h('td', { text: yesno(c.ack_required) }), h('td', { text: num(c.prefetch_count) }),
            h('td', { text: yesno(c.exclusive) }), h('td', { text: yesno(c.active !== false) }))))))
        : h('div', { class: 'panel-body muted', text: 'No consumers.' }));
      const bs = await api('GET', base + '/bindings');
      append(clear(bindings), bindingsTable(bs, 'queue'));
    }
    return { update, destroy() { queued.destroy(); rates.destroy(); } };
  }

  // ------------------------------------------------------------------ exchange page
  function ExchangeView(main, vhost, name) {
    const real = name === 'amq.default' ? '' : name;
    const base = `/exchanges/${seg(vhost)}/${xseg(real)}`;
    const titleBadges = h('span');
    const del = h('button', { type: 'button', class: 'btn danger solid', id: 'delete-exchange-button', text: 'Delete exchange' });
    const builtin = real === '' || real.startsWith('amq.');
    del.hidden = builtin;
    const stats = statGroup([
      { key: 'in', label: 'Message rate in', rate: true, color: RATE_SERIES[0].color },
      { key: 'out', label: 'Message rate out', rate: true, color: RATE_SERIES[1].color },
    ]);
    const details = h('div', { class: 'panel-body' });
    const bindings = h('div', { class: 'panel-body flush' });
    const missing = h('div', { class: 'error-box', hidden: true });
    const body = h('div', null, stats.el,
      h('div', { class: 'grid two' },
        h('section', { class: 'panel' }, h('h2', null, 'Details'), details),
        h('section', { class: 'panel' }, h('h2', null, 'Bindings from this exchange'), bindings)),
      h('section', { class: 'panel' }, h('h2', null, 'Publish message'),
        h('div', { class: 'panel-body' }, PublishForm(vhost, { exchange: real, onPublished: () => refreshNow() }))));
    append(clear(main), [
      pageHead([h('span', { text: xlabel(real) }), titleBadges], null, [del],
        [h('a', { href: '#/exchanges', text: 'Exchanges' }), ' › virtual host ', h('b', { text: vhost })]),
      missing, body,
    ]);
    del.addEventListener('click', async () => {
      if (!await confirmBox('Delete exchange', `Delete the exchange “${real}”?`, 'Delete')) return;
      try {
        await api('DELETE', base);
        toast(`Exchange “${real}” deleted.`);
        location.hash = '#/exchanges';
      } catch (e) { toast('Delete failed: ' + e.message, true); }
    });

    async function update() {
      let x;
      try {
        x = await api('GET', base);
      } catch (e) {
        if (e.status === 404) {
          body.hidden = true; del.hidden = true; missing.hidden = false;
          missing.textContent = `The exchange “${real}” does not exist in vhost “${vhost}”.`;
          return;
        }
        throw e;
      }
      stats.cards.in.set(rateText(rate(x.message_stats, 'publish_in')));
      stats.cards.out.set(rateText(rate(x.message_stats, 'publish_out')));
      append(clear(titleBadges), h('span', { class: 'badge type', text: x.type }));
      append(clear(details), kvTable([
        ['Virtual host', x.vhost], ['Type', x.type], ['Durable', yesno(x.durable)],
        ['Auto-delete', yesno(x.auto_delete)], ['Internal', yesno(x.internal)],
        ['Arguments', monoOrNone(x.arguments)], ['Policy', x.policy || ''],
      ]));
      if (real === '') {
        append(clear(bindings), h('div', { class: 'panel-body muted', text: 'The default exchange routes to the queue named by the routing key.' }));
      } else {
        append(clear(bindings), bindingsTable(await api('GET', base + '/bindings/source'), 'exchange'));
      }
    }
    return { update, destroy() {} };
  }

  // ------------------------------------------------------------------ routing and refresh
  function parseRoute() {
    const raw = location.hash.replace(/^#\/?/, '');
    const parts = raw ? raw.split('/').map((p) => { try { return decodeURIComponent(p); } catch (e) { return p; } }) : [];
    if (!parts.length || parts[0] === '' || parts[0] === 'overview') return { name: 'overview', nav: 'overview' };
    if (parts[0] === 'queues' && parts.length === 3) return { name: 'queue', nav: 'queues', args: [parts[1], parts[2]] };
    if (parts[0] === 'exchanges' && parts.length === 3) return { name: 'exchange', nav: 'exchanges', args: [parts[1], parts[2]] };
    if (TABLES[parts[0]] && parts.length === 1) return { name: 'table', nav: parts[0], args: [TABLES[parts[0]]] };
    return { name: 'overview', nav: 'overview' };
  }

  function navigate() {
    if (!S.auth) return;
    if (S.view && S.view.destroy) S.view.destroy();
    S.gen++;
    const route = parseRoute();
    for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.dataset.nav === route.nav);
    const main = $('#main');
    main.dataset.view = route.name;
    if (route.name === 'overview') S.view = OverviewView(main);
    else if (route.name === 'table') S.view = TableView(main, ...route.args);
    else if (route.name === 'queue') S.view = QueueView(main, ...route.args);
    else if (route.name === 'exchange') S.view = ExchangeView(main, ...route.args);
    window.scrollTo(0, 0);
    refreshNow();
  }

  let errorShown = false;
  async function tick(gen) {
    if (gen !== S.gen || !S.view) return;
    const view = S.view;
    try {
      await view.update();
      document.body.dataset.updated = String(Date.now());
      if (errorShown) { errorShown = false; $('#toast').hidden = true; }
    } catch (e) {
      if (S.auth && e.status !== 401) { errorShown = true; toast('Refresh failed: ' + e.message, true); }
    }
    if (gen !== S.gen) return;
    clearTimeout(S.timer);
    if (S.refreshMs > 0) S.timer = setTimeout(() => tick(gen), S.refreshMs);
  }

  function refreshNow() {
    clearTimeout(S.timer);
    S.gen++;
    tick(S.gen);
  }

  // ------------------------------------------------------------------ login and logout
  function showLogin(message) {
    clearTimeout(S.timer);
    if (S.view && S.view.destroy) S.view.destroy();
    S.view = null;
    S.gen++;
    $('#app').hidden = true;
    $('#login-view').hidden = false;
    clear($('#main'));
    $('#login-error').textContent = message || '';
    $('#login-password').value = '';
    $('#login-username').focus();
  }

  function showApp() {
    $('#login-view').hidden = true;
    $('#app').hidden = false;
    $('#user-name').textContent = S.user ? S.user.name : '';
    api('GET', '/cluster-name').then((c) => { $('#cluster-name').textContent = c.name; }).catch(() => {});
    navigate();
  }

  function sessionExpired(message) {
    S.auth = null;
    S.user = null;
    sessionStorage.removeItem(AUTH_KEY);
    sessionStorage.removeItem(USER_KEY);
    showLogin('Your session has ended: ' + message);
  }

  async function login(username, password) {
    const token = b64(username + ':' + password);
    const who = await api('GET', '/whoami', undefined, token);
    S.auth = token;
    S.user = who;
    sessionStorage.setItem(AUTH_KEY, token);
    sessionStorage.setItem(USER_KEY, JSON.stringify(who));
  }

  function logout() {
    S.auth = null;
    S.user = null;
    S.history = {};
    sessionStorage.removeItem(AUTH_KEY);
    sessionStorage.removeItem(USER_KEY);
    showLogin('');
  }

  function init() {
    const saved = Number(localStorage.getItem(REFRESH_KEY));
    if ([0, 2000, 5000, 10000, 30000].includes(saved) && localStorage.getItem(REFRESH_KEY) !== null) S.refreshMs = saved;
    const sel = $('#refresh-interval');
    sel.value = String(S.refreshMs);
    sel.addEventListener('change', () => {
      S.refreshMs = Number(sel.value);
      localStorage.setItem(REFRESH_KEY, sel.value);
      refreshNow();
    });

    $('#login-form').addEventListener('submit', async (e) => {
      e.preventDefault();
      const btn = $('#login-submit');
      btn.disabled = true;
      $('#login-error').textContent = '';
      try {
        await login($('#login-username').value, $('#login-password').value);
        showApp();
      } catch (err) {
        $('#login-error').textContent = (err.status === 401 && /^(login failed)?$/i.test(err.message.trim()))
          ? 'Login failed: wrong username or password.' : err.message;
      } finally {
        btn.disabled = false;
      }
    });
    $('#logout').addEventListener('click', logout);
    window.addEventListener('hashchange', navigate);

    const token = sessionStorage.getItem(AUTH_KEY);
    if (token) {
      S.auth = token;
      try { S.user = JSON.parse(sessionStorage.getItem(USER_KEY) || 'null'); } catch (e) { S.user = null; }
      api('GET', '/whoami').then((who) => { S.user = who; showApp(); })
        .catch((e) => { if (e.status !== 401) showLogin(e.message); });
    } else {
      showLogin('');
    }
  }

  init();
})();
