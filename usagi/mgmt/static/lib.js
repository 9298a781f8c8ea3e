/* Usagi management dashboard: the pieces every page uses. Plain JavaScript modules, no build step,
 * nothing loaded from elsewhere (the broker must work offline).
 *
 * DOM helpers, number formats, the API client (HTTP basic auth, credentials in sessionStorage),
 * toasts and confirmations, tables, forms (with an editor for AMQP arguments and policy
 * definitions), what the logged-in user's tags allow, and the refresh loop that calls the current
 * page's update().
 */

export const S = {
  auth: null,          // base64 "user:password"
  user: null,          // /api/whoami: {name, tags}
  view: null,          // {update(), destroy()}
  gen: 0,              // bumps on every navigation, so late answers for an old view are dropped
  timer: null,
  refreshMs: 5000,
  rangeAge: 600,       // seconds of history the charts show (lengths_age, msg_rates_age, ...)
  tables: {},          // table id -> {filter, page, sort, reverse}
  onExpired: null,     // set by app.js: the session ended (a 401 on a request of the session)
};

export const $ = (sel, root) => (root || document).querySelector(sel);

// ------------------------------------------------------------------ DOM helpers
export function h(tag, attrs, ...children) {
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

export function append(node, ...children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    node.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

export function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }
export function setText(node, text) { if (node && node.textContent !== text) node.textContent = text; }
export function replace(node, ...children) { return append(clear(node), ...children); }

// ------------------------------------------------------------------ formatting
const NF = new Intl.NumberFormat('en-US');
const NF1 = new Intl.NumberFormat('en-US', { maximumFractionDigits: 1, minimumFractionDigits: 0 });
const NF2c = new Intl.NumberFormat('en-US', { maximumFractionDigits: 2 });
const NF2 = new Intl.NumberFormat('en-US', { maximumFractionDigits: 2, minimumFractionDigits: 1 });

export function num(v) { return (typeof v === 'number' && isFinite(v)) ? NF.format(v) : '–'; }
export function rateText(v) { return (typeof v === 'number' && isFinite(v)) ? NF2.format(v) + '/s' : '–'; }
export function bytes(v) {
  if (typeof v !== 'number' || !isFinite(v)) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return (i === 0 ? NF.format(v) : NF1.format(v)) + ' ' + units[i];
}
export function compact(v) {
  const a = Math.abs(v);
  if (a >= 1e9) return NF1.format(v / 1e9) + 'G';
  if (a >= 1e6) return NF1.format(v / 1e6) + 'M';
  if (a >= 1e4) return NF1.format(v / 1e3) + 'k';
  return a > 0 && a < 10 ? NF2c.format(v) : NF1.format(v);
}
export function duration(ms) {
  if (typeof ms !== 'number' || !isFinite(ms)) return '–';
  let s = Math.floor(ms / 1000);
  const d = Math.floor(s / 86400); s -= d * 86400;
  const hh = Math.floor(s / 3600); s -= hh * 3600;
  const mm = Math.floor(s / 60); s -= mm * 60;
  if (d) return `${d}d ${hh}h`;
  if (hh) return `${hh}h ${mm}m`;
  if (mm) return `${mm}m ${s}s`;
  return `${s}s`;
}
export function yesno(v) { return v ? 'yes' : 'no'; }
export function get(obj, path) {
  let cur = obj;
  for (const p of path.split('.')) {
    if (cur === null || cur === undefined) return undefined;
    cur = cur[p];
  }
  return cur;
}
export function rate(obj, key) {
  const v = get(obj, key + '_details.rate');
  return typeof v === 'number' ? v : 0;
}
export function jsonText(v) {
  if (v === null || v === undefined) return '';
  if (typeof v === 'object') return Object.keys(v).length ? JSON.stringify(v) : '';
  return String(v);
}
export function monoOrNone(v) {
  const t = jsonText(v);
  return t ? h('span', { class: 'mono', text: t }) : '';
}
export function reasonText(r) {
  if (Array.isArray(r)) return r.join(': ');
  if (r && typeof r === 'object') return JSON.stringify(r);
  return String(r || '');
}
export function xlabel(name) { return name === '' ? '(AMQP default)' : name; }
export function seg(s) { return encodeURIComponent(s); }
export function xseg(name) { return seg(name === '' ? 'amq.default' : name); }
export function clock(t) {
  const d = new Date(t);
  return [d.getHours(), d.getMinutes(), d.getSeconds()].map((x) => String(x).padStart(2, '0')).join(':');
}
export function dateTime(ms) {
  if (typeof ms !== 'number') return '';
  const d = new Date(ms);
  return d.getFullYear() + '-' + String(d.getMonth() + 1).padStart(2, '0') + '-' + String(d.getDate()).padStart(2, '0')
    + ' ' + clock(ms);
}

export function stateBadge(state) {
  return h('span', { class: 'state ' + String(state || '').toLowerCase(), text: state || 'unknown' });
}

// ------------------------------------------------------------------ what the user's tags allow
// RabbitMQ's rules: administrator > monitoring / policymaker > management; every tag above
// management includes it.
export function hasTag(t) { return !!(S.user && (S.user.tags || []).includes(t)); }
export const can = {
  admin: () => hasTag('administrator'),
  monitor: () => hasTag('administrator') || hasTag('monitoring'),
  policies: () => hasTag('administrator') || hasTag('policymaker'),
};

// ------------------------------------------------------------------ API
export class ApiError extends Error {
  constructor(status, reason) { super(reason); this.status = status; }
}

export async function api(method, path, body, auth, headers) {
  const hdrs = Object.assign({ 'Authorization': 'Basic ' + (auth || S.auth) }, headers || {});
  const opts = { method, headers: hdrs, credentials: 'omit', cache: 'no-store' };
  if (body !== undefined) {
    hdrs['Content-Type'] = 'application/json';
    opts.body = typeof body === 'string' ? body : JSON.stringify(body);
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
    // the session's credentials no longer work (password changed, user deleted or untagged): log
    // out; a 401 for want of a permission or a tag ("not_authorised") leaves the session alone
    if (res.status === 401 && !auth && S.auth && (!reason || /^(login failed|not_authorized|not management user)$/i.test(reason))) {
      if (S.onExpired) S.onExpired(err.message);
    }
    throw err;
  }
  return data;
}

/* The query string that asks the API for `S.rangeAge` seconds of history of the given kinds. */
export function rangeQuery(kinds) {
  const incr = S.rangeAge <= 600 ? 5 : 60;
  return kinds.map((k) => `${k}_age=${S.rangeAge}&${k}_incr=${incr}`).join('&');
}

export function b64(s) {
  const bytesArr = new TextEncoder().encode(s);
  let bin = '';
  for (const b of bytesArr) bin += String.fromCharCode(b);
  return btoa(bin);
}

// ------------------------------------------------------------------ toast and confirm
let toastTimer = null;
export function toast(text, isError) {
  const t = $('#toast');
  t.textContent = text;
  t.className = 'toast' + (isError ? ' err' : '');
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.hidden = true; }, 4000);
}

export function confirmBox(title, text, okLabel) {
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

/* Runs an API action behind a button: disabled meanwhile, a toast with the outcome, then
 * `after` (a refresh, a navigation). Returns true on success. */
export async function act(button, fn, okText, after) {
  if (button) button.disabled = true;
  try {
    await fn();
    if (okText) toast(okText);
    if (after) after();
    return true;
  } catch (e) {
    toast(e.message, true);
    return false;
  } finally {
    if (button) button.disabled = false;
  }
}

// ------------------------------------------------------------------ refresh loop
let errorShown = false;
export async function tick(gen) {
  if (gen !== S.gen || !S.view) return;
  const view = S.view;
  try {
    await view.update();
    document.body.dataset.updated = String(Date.now());
    if (errorShown) { errorShown = false; $('#toast').hidden = true; }
  } catch (e) {
    if (S.auth && gen === S.gen && !(e.status === 401 && !S.auth)) {
      errorShown = true;
      toast('Refresh failed: ' + e.message, true);
    }
  }
  if (gen !== S.gen) return;
  clearTimeout(S.timer);
  if (S.refreshMs > 0) S.timer = setTimeout(() => tick(gen), S.refreshMs);
}

export function refreshNow() {
  clearTimeout(S.timer);
  S.gen++;
  tick(S.gen);
}

// ------------------------------------------------------------------ page pieces
export function pageHead(title, sub, actions, crumbs) {
  return h('div', { class: 'page-head' },
    h('div', null,
      crumbs ? h('div', { class: 'crumbs' }, crumbs) : null,
      h('h1', null, title),
      sub ? h('div', { class: 'sub' }, sub) : null),
    actions ? h('div', { class: 'actions' }, actions) : null);
}

export function panel(title, body, opts) {
  opts = opts || {};
  return h('section', { class: 'panel' + (opts.cls ? ' ' + opts.cls : ''), id: opts.id || null },
    h('h2', null, title, opts.hint ? h('span', { class: 'hint', text: opts.hint }) : null, opts.right || null),
    body);
}

/* A panel whose body shows on a click of its title (RabbitMQ's "Add a new queue" sections). */
export function foldPanel(title, body, opts) {
  opts = opts || {};
  const wrap = h('div', { class: 'panel-body' }, body);
  wrap.hidden = !opts.open;
  const toggle = h('button', { type: 'button', class: 'fold', id: opts.id ? opts.id + '-toggle' : null,
    'aria-expanded': String(!!opts.open) }, h('span', { class: 'chev', text: '▸' }), title);
  toggle.addEventListener('click', () => {
    wrap.hidden = !wrap.hidden;
    toggle.setAttribute('aria-expanded', String(!wrap.hidden));
  });
  return h('section', { class: 'panel fold-panel', id: opts.id || null }, h('h2', null, toggle), wrap);
}

export function kvTable(rows, id) {
  return h('table', { class: 'kv', id: id || null }, h('tbody', null, rows.filter(Boolean).map(([k, v]) =>
    h('tr', null, h('th', { text: k }), h('td', null, v === '' || v === undefined || v === null ? h('span', { class: 'muted', text: '–' }) : v)))));
}

export function errorBox(text) { return h('div', { class: 'error-box', text }); }

export function needsTag(main, title, tag) {
  replace(main, pageHead(title, null), errorBox(`This page needs the “${tag}” tag; you are logged in as “${S.user ? S.user.name : ''}” with tags: ${(S.user && S.user.tags.length) ? S.user.tags.join(', ') : 'none'}.`));
  return { update() {}, destroy() {} };
}

/* A plain table: columns [{label, render(row) -> node|text, num, cls, key}], rows; `empty` text. */
export function dataTable(id, columns, rows, empty, rowAttrs) {
  const table = h('table', { class: 'data', id: id || null },
    h('thead', null, h('tr', null, columns.map((c) => h('th', { class: c.num ? 'num' : null, text: c.label })))),
    h('tbody', null, rows.length ? rows.map((r) => h('tr', rowAttrs ? rowAttrs(r) : null,
      columns.map((c) => h('td', { class: [c.num ? 'num' : '', c.cls || ''].join(' ').trim() || null, 'data-col': c.key || null }, c.render(r)))))
      : h('tr', null, h('td', { class: 'empty', colspan: String(columns.length), text: empty || 'Nothing here.' }))));
  return h('div', { class: 'table-scroll' }, table);
}

// ------------------------------------------------------------------ forms
export function input(id, attrs) {
  return h('input', Object.assign({ type: 'text', id, name: id, autocomplete: 'off' }, attrs || {}));
}

export function select(id, options, value) {
  const el = h('select', { id, name: id }, options.map((o) => {
    const [v, label] = Array.isArray(o) ? o : [o, o];
    return h('option', { value: v, text: label });
  }));
  if (value !== undefined) el.value = value;
  return el;
}

/* Rows of a form grid: [label, control, help] triples (null rows are skipped). */
export function formGrid(rows) {
  return h('div', { class: 'form-grid' }, rows.filter(Boolean).map(([label, control, help]) => [
    h('label', { class: control && control.tagName === 'TEXTAREA' || (control && control.classList && control.classList.contains('args')) ? 'top' : null,
      for: control && control.id ? control.id : null, text: label }),
    help ? h('div', null, control, h('div', { class: 'help' }, help)) : control,
  ]));
}

/* A form with a submit button and a result line; `onSubmit` may throw (its message is shown). */
export function form(id, grid, submitLabel, onSubmit, extra) {
  const result = h('span', { class: 'result', id: id + '-result', role: 'status' });
  const submit = h('button', { type: 'submit', class: 'btn primary', id: id + '-submit', text: submitLabel });
  const f = h('form', { id, autocomplete: 'off' }, grid, h('div', { class: 'form-actions' }, submit, extra || null, result));
  f.addEventListener('submit', async (e) => {
    e.preventDefault();
    result.className = 'result';
    result.textContent = '';
    submit.disabled = true;
    try {
      const msg = await onSubmit();
      if (msg) { result.className = 'result ok'; result.textContent = msg; }
    } catch (err) {
      result.className = 'result err';
      result.textContent = err.message;
    } finally {
      submit.disabled = false;
    }
  });
  return f;
}

/* A value typed in a form, as the type chosen beside it: RabbitMQ's UI offers String, Number,
 * Boolean and List (comma separated strings). */
export function typedValue(raw, type, key) {
  const v = raw.trim();
  if (type === 'number') {
    if (!/^-?\d+(\.\d+)?$/.test(v)) throw new Error(`${key}: “${raw}” is not a number`);
    return Number(v);
  }
  if (type === 'boolean') {
    if (v !== 'true' && v !== 'false') throw new Error(`${key}: a boolean is true or false, not “${raw}”`);
    return v === 'true';
  }
  if (type === 'list') return v ? v.split(',').map((x) => x.trim()) : [];
  return raw;
}

function typeOf(v) {
  if (typeof v === 'number') return 'number';
  if (typeof v === 'boolean') return 'boolean';
  if (Array.isArray(v)) return 'list';
  return 'string';
}

/* An editor of a table of key = value (typed) rows, with links that add the common keys:
 * `known` is [{key, label, type, value?}]. Used for queue and exchange arguments, binding
 * arguments and policy definitions. value() returns the object or throws on a bad entry. */
export function KeyValueEditor(id, known, initial) {
  const rows = h('div', { class: 'kv-rows', id });
  function addRow(key, value, type) {
    const k = h('input', { type: 'text', class: 'kv-key', placeholder: 'key', value: key || '' });
    const v = h('input', { type: 'text', class: 'kv-value', placeholder: 'value', value: value === undefined ? '' : (Array.isArray(value) ? value.join(', ') : String(value)) });
    const t = select(null, [['string', 'String'], ['number', 'Number'], ['boolean', 'Boolean'], ['list', 'List']], type || 'string');
    t.removeAttribute('id'); t.removeAttribute('name'); t.className = 'kv-type';
    const del = h('button', { type: 'button', class: 'btn small kv-del', title: 'Remove', text: '×' });
    const row = h('div', { class: 'kv-row' }, k, h('span', { class: 'eq', text: '=' }), v, t, del);
    del.addEventListener('click', () => { row.remove(); ensureBlank(); });
    k.addEventListener('input', ensureBlank);
    rows.appendChild(row);
    return row;
  }
  function ensureBlank() {
    const all = [...rows.querySelectorAll('.kv-row')];
    if (!all.length || all[all.length - 1].querySelector('.kv-key').value.trim()) addRow('', '', 'string');
  }
  function add(key, type, value) {
    for (const r of rows.querySelectorAll('.kv-row')) {
      if (r.querySelector('.kv-key').value.trim() === key) { r.querySelector('.kv-value').focus(); return; }
    }
    const blank = [...rows.querySelectorAll('.kv-row')].find((r) => !r.querySelector('.kv-key').value.trim());
    if (blank) blank.remove();
    const row = addRow(key, value === undefined ? '' : value, type);
    ensureBlank();
    row.querySelector('.kv-value').focus();
  }
  for (const [k, v] of Object.entries(initial || {})) addRow(k, v, typeOf(v));
  ensureBlank();
  const links = h('div', { class: 'kv-links' });
  function setKnown(list) {
    replace(links, list.length ? ['Add ', list.map((a, i) => [i ? ' · ' : '',
      h('a', { href: '#', class: 'kv-link', 'data-key': a.key, title: a.key,
        onclick: (e) => { e.preventDefault(); add(a.key, a.type, a.value); }, text: a.label })])] : null);
  }
  setKnown(known || []);
  const el = h('div', { class: 'args' }, rows, links);
  return {
    el,
    setKnown,
    value() {
      const out = {};
      for (const r of rows.querySelectorAll('.kv-row')) {
        const key = r.querySelector('.kv-key').value.trim();
        const raw = r.querySelector('.kv-value').value;
        if (!key) {
          if (raw.trim()) throw new Error(`a value (“${raw}”) has no key`);
          continue;
        }
        out[key] = typedValue(raw, r.querySelector('.kv-type').value, key);
      }
      return out;
    },
    reset(initialValues) { clear(rows); for (const [k, v] of Object.entries(initialValues || {})) addRow(k, v, typeOf(v)); ensureBlank(); },
  };
}

/* The vhosts the user may pick in forms (GET /api/vhosts), cached for the page's life. */
let vhostCache = null;
export async function vhostNames(fresh) {
  if (!vhostCache || fresh) vhostCache = (await api('GET', '/vhosts?columns=name')).map((v) => v.name);
  return vhostCache;
}
export function forgetVhosts() { vhostCache = null; }

export function vhostSelect(id, value) {
  const el = select(id, value !== undefined ? [value] : ['/'], value);
  vhostNames().then((names) => {
    const cur = el.value;
    replace(el, names.map((n) => h('option', { value: n, text: n })));
    if (names.includes(cur)) el.value = cur;
  }).catch(() => {});
  return el;
}

export function linkQueue(vhost, name) { return h('a', { href: `#/queues/${seg(vhost)}/${seg(name)}`, text: name }); }
export function linkExchange(vhost, name) { return h('a', { href: `#/exchanges/${seg(vhost)}/${xseg(name)}`, text: xlabel(name) }); }
