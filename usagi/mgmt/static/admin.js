/* The admin pages: users, virtual hosts, permissions and topic permissions, policies and
 * operator policies, limits, the node's feature flags and definitions export and import.
 *
 * Who sees what follows RabbitMQ's management UI: users, virtual hosts, feature flags and
 * definitions are for administrators; policies and limits are listed for every management user,
 * policies may be changed by policymakers (and administrators), operator policies and limits
 * only by administrators. A page or a button a user may not use is not shown; the API refuses
 * the action anyway. */
import {
  h, replace, num, seg, api, confirmBox, act, refreshNow, pageHead, panel, foldPanel,
  kvTable, dataTable, input, select, formGrid, form, KeyValueEditor, vhostSelect, vhostNames, forgetVhosts,
  jsonText, can, needsTag, errorBox, rangeQuery, rate, rateText,
} from './lib.js';

// ------------------------------------------------------------------ the admin tabs
export const ADMIN_TABS = [
  { id: 'users', label: 'Users', allowed: () => can.admin(), tag: 'administrator' },
  { id: 'vhosts', label: 'Virtual hosts', allowed: () => can.admin(), tag: 'administrator' },
  { id: 'policies', label: 'Policies', allowed: () => true },
  { id: 'limits', label: 'Limits', allowed: () => true },
  { id: 'feature-flags', label: 'Feature flags', allowed: () => can.admin(), tag: 'administrator' },
  { id: 'definitions', label: 'Definitions', allowed: () => can.admin(), tag: 'administrator' },
];

function tabs(current) {
  return h('nav', { class: 'tabs', id: 'admin-tabs' }, ADMIN_TABS.filter((t) => t.allowed()).map((t) =>
    h('a', { href: `#/admin/${t.id}`, 'data-tab': t.id, class: t.id === current ? 'active' : null, text: t.label })));
}

function adminHead(current, title, sub, actions, crumbs) {
  return [tabs(current), pageHead(title, sub, actions, crumbs)];
}

function guard(main, tabId, title) {
  const t = ADMIN_TABS.find((x) => x.id === tabId);
  if (t && !t.allowed()) return needsTag(main, title, t.tag);
  return null;
}

const TAG_CHOICES = ['administrator', 'monitoring', 'policymaker', 'management', 'impersonator'];

function tagsOf(text) {
  return text.split(',').map((t) => t.trim()).filter(Boolean);
}

/* A tags input with RabbitMQ's quick picks ("Admin | Monitoring | ... | None"). */
function tagsInput(id, value) {
  const el = input(id, { value: value || '', placeholder: 'comma separated' });
  const picks = h('div', { class: 'tag-picks' }, 'Set: ', TAG_CHOICES.map((t, i) => [i ? ' · ' : '',
    h('a', { href: '#', 'data-tag': t, text: t, onclick: (e) => {
      e.preventDefault();
      const cur = tagsOf(el.value);
      if (!cur.includes(t)) cur.push(t);
      el.value = cur.join(', ');
    } })]), ' · ', h('a', { href: '#', 'data-tag': '', text: 'none', onclick: (e) => { e.preventDefault(); el.value = ''; } }));
  return { el, box: h('div', null, el, picks) };
}

function tagBadges(tags) {
  const list = Array.isArray(tags) ? tags : tagsOf(String(tags || ''));
  return list.length ? list.map((t) => h('span', { class: 'badge tag', text: t })) : h('span', { class: 'muted', text: 'none' });
}

function patternCell(p) { return h('span', { class: 'mono', text: p }); }

/* A <select> of the users, refreshed (the choice kept) on every update of its page. */
async function fillUsers(sel) {
  const names = (await api('GET', '/users?columns=name')).map((u) => u.name);
  const cur = sel.value;
  if (names.join('\n') === [...sel.options].map((o) => o.value).join('\n')) return;
  replace(sel, names.map((n) => h('option', { value: n, text: n })));
  if (names.includes(cur)) sel.value = cur;
}

// ------------------------------------------------------------------ permissions (user and vhost pages)
/* The permissions of a user (fixed.user) or in a vhost (fixed.vhost): a table with Clear, and a
 * form to set one. */
function PermissionsPanel(fixed) {
  const body = h('div', { class: 'panel-body flush' });
  const other = fixed.user !== undefined ? vhostSelect('perm-vhost') : select('perm-user', []);
  const conf = input('perm-configure', { value: '.*' });
  const write = input('perm-write', { value: '.*' });
  const read = input('perm-read', { value: '.*' });
  const f = form('perm-form', formGrid([
    [fixed.user !== undefined ? 'Virtual host' : 'User', other],
    ['Configure regexp', conf], ['Write regexp', write], ['Read regexp', read],
  ]), 'Set permission', async () => {
    const user = fixed.user !== undefined ? fixed.user : other.value;
    const vhost = fixed.vhost !== undefined ? fixed.vhost : other.value;
    await api('PUT', `/permissions/${seg(vhost)}/${seg(user)}`, { configure: conf.value, write: write.value, read: read.value });
    refreshNow();
    return `Permissions of “${user}” in “${vhost}” set.`;
  });
  const el = h('section', { class: 'panel', id: 'permissions-panel' }, h('h2', null, 'Permissions'), body,
    h('div', { class: 'panel-body bind-form' }, h('h3', { text: 'Set permission' }), f));
  async function update() {
    if (fixed.vhost !== undefined) await fillUsers(other);
    const path = fixed.user !== undefined ? `/users/${seg(fixed.user)}/permissions` : `/vhosts/${seg(fixed.vhost)}/permissions`;
    const perms = await api('GET', path);
    replace(body, dataTable('permissions-table', [
      fixed.user !== undefined ? { label: 'Virtual host', render: (p) => p.vhost } : { label: 'User', render: (p) => h('a', { href: `#/admin/users/${seg(p.user)}`, text: p.user }) },
      { label: 'Configure', render: (p) => patternCell(p.configure) },
      { label: 'Write', render: (p) => patternCell(p.write) },
      { label: 'Read', render: (p) => patternCell(p.read) },
      { label: '', render: (p) => h('button', { type: 'button', class: 'btn small danger clear-permission', text: 'Clear', onclick: async (e) => {
        if (!await confirmBox('Clear permissions', `Clear the permissions of “${p.user}” in “${p.vhost}”?`, 'Clear')) return;
        await act(e.target, () => api('DELETE', `/permissions/${seg(p.vhost)}/${seg(p.user)}`), 'Permissions cleared.', refreshNow);
      } }) },
    ], perms, 'No permissions.', (p) => ({ 'data-vhost': p.vhost, 'data-user': p.user })));
  }
  return { el, update };
}

function TopicPermissionsPanel(fixed) {
  const body = h('div', { class: 'panel-body flush' });
  const other = fixed.user !== undefined ? vhostSelect('topic-vhost') : select('topic-user', []);
  const exchange = select('topic-exchange', ['amq.topic']);
  function fillExchanges() {
    const vhost = fixed.vhost !== undefined ? fixed.vhost : other.value;
    api('GET', `/exchanges/${seg(vhost)}?columns=name,type`).then((xs) => {
      const names = xs.filter((x) => x.type === 'topic').map((x) => x.name);
      replace(exchange, (names.length ? names : ['amq.topic']).map((n) => h('option', { value: n, text: n })));
    }).catch(() => {});
  }
  if (fixed.user !== undefined) other.addEventListener('change', fillExchanges);
  setTimeout(fillExchanges, 0);
  const write = input('topic-write', { value: '.*' });
  const read = input('topic-read', { value: '.*' });
  const f = form('topic-form', formGrid([
    [fixed.user !== undefined ? 'Virtual host' : 'User', other], ['Exchange', exchange],
    ['Write regexp', write, 'routing keys the user may publish with'], ['Read regexp', read, 'binding keys the user may consume with'],
  ]), 'Set topic permission', async () => {
    const user = fixed.user !== undefined ? fixed.user : other.value;
    const vhost = fixed.vhost !== undefined ? fixed.vhost : other.value;
    await api('PUT', `/topic-permissions/${seg(vhost)}/${seg(user)}`, { exchange: exchange.value, write: write.value, read: read.value });
    refreshNow();
    return `Topic permission of “${user}” on “${exchange.value}” set.`;
  });
  const el = h('section', { class: 'panel', id: 'topic-permissions-panel' }, h('h2', null, 'Topic permissions'), body,
    h('div', { class: 'panel-body bind-form' }, h('h3', { text: 'Set topic permission' }), f));
  async function update() {
    if (fixed.vhost !== undefined) await fillUsers(other);
    const path = fixed.user !== undefined ? `/users/${seg(fixed.user)}/topic-permissions` : `/vhosts/${seg(fixed.vhost)}/topic-permissions`;
    const perms = await api('GET', path);
    replace(body, dataTable('topic-permissions-table', [
      fixed.user !== undefined ? { label: 'Virtual host', render: (p) => p.vhost } : { label: 'User', render: (p) => p.user },
      { label: 'Exchange', render: (p) => p.exchange },
      { label: 'Write', render: (p) => patternCell(p.write) },
      { label: 'Read', render: (p) => patternCell(p.read) },
      { label: '', render: (p) => h('button', { type: 'button', class: 'btn small danger clear-topic-permission', text: 'Clear', onclick: async (e) => {
        await act(e.target, () => api('DELETE', `/topic-permissions/${seg(p.vhost)}/${seg(p.user)}/${seg(p.exchange)}`), 'Topic permission cleared.', refreshNow);
      } }) },
    ], perms, 'No topic permissions.', (p) => ({ 'data-vhost': p.vhost, 'data-user': p.user, 'data-exchange': p.exchange })));
  }
  return { el, update };
}

// ------------------------------------------------------------------ users
export function UsersView(main) {
  const denied = guard(main, 'users', 'Users');
  if (denied) return denied;
  const list = h('div', { class: 'panel-body flush' });
  const name = input('new-user-name');
  const pw = input('new-user-password', { type: 'password', autocomplete: 'new-password' });
  const pw2 = input('new-user-password-confirm', { type: 'password', autocomplete: 'new-password' });
  const tags = tagsInput('new-user-tags', 'management');
  const f = form('add-user-form', formGrid([
    ['Username', name], ['Password', pw], ['Password (again)', pw2, 'Leave both empty for a user who cannot log in with a password.'],
    ['Tags', tags.box],
  ]), 'Add user', async () => {
    const n = name.value.trim();
    if (!n) throw new Error('A user needs a name.');
    if (pw.value !== pw2.value) throw new Error('The passwords differ.');
    const body = { tags: tags.el.value };
    if (pw.value) body.password = pw.value; else body.password_hash = '';
    await api('PUT', `/users/${seg(n)}`, body);
    name.value = pw.value = pw2.value = '';
    refreshNow();
    return `User “${n}” added.`;
  });
  replace(main, adminHead('users', 'Users'), panel('All users', list), foldPanel('Add a user', f, { id: 'add-user', open: true }));
  async function update() {
    const [users, perms] = await Promise.all([api('GET', '/users'), api('GET', '/permissions')]);
    const access = {};
    for (const p of perms) (access[p.user] = access[p.user] || []).push(p.vhost);
    replace(list, dataTable('users-table', [
      { label: 'Name', cls: 'name', render: (u) => h('a', { href: `#/admin/users/${seg(u.name)}`, text: u.name }) },
      { label: 'Tags', key: 'tags', render: (u) => tagBadges(u.tags) },
      { label: 'Can access virtual hosts', render: (u) => (access[u.name] || []).length ? access[u.name].sort().join(', ') : h('span', { class: 'muted', text: 'no access' }) },
      { label: 'Has password', render: (u) => u.password_hash ? 'yes' : h('span', { class: 'muted', text: 'no' }) },
    ], users, 'No users.', (u) => ({ 'data-name': u.name })));
  }
  return { update, destroy() {} };
}

export function UserView(main, name) {
  const denied = guard(main, 'users', 'User');
  if (denied) return denied;
  const base = `/users/${seg(name)}`;
  const details = h('div', { class: 'panel-body', id: 'user-details' });
  const perms = PermissionsPanel({ user: name });
  const topic = TopicPermissionsPanel({ user: name });
  const tags = tagsInput('edit-user-tags');
  const pw = input('edit-user-password', { type: 'password', autocomplete: 'new-password', placeholder: 'unchanged' });
  let current = null;
  const f = form('edit-user-form', formGrid([['Tags', tags.box], ['New password', pw, 'Leave empty to keep the current password.']]),
    'Update user', async () => {
      const body = { tags: tags.el.value };
      if (pw.value) body.password = pw.value;
      else { body.password_hash = current ? current.password_hash : ''; body.hashing_algorithm = current ? current.hashing_algorithm : undefined; }
      await api('PUT', base, body);
      pw.value = '';
      refreshNow();
      return `User “${name}” updated.`;
    });
  const del = h('button', { type: 'button', class: 'btn danger solid', id: 'delete-user-button', text: 'Delete user' });
  del.addEventListener('click', async () => {
    if (!await confirmBox('Delete user', `Delete the user “${name}”? Its connections are closed and its permissions go with it.`, 'Delete')) return;
    await act(del, () => api('DELETE', base), `User “${name}” deleted.`, () => { location.hash = '#/admin/users'; });
  });
  const missing = errorBox(`There is no user “${name}”.`);
  missing.hidden = true;
  const body = h('div', null, h('div', { class: 'grid two' }, panel('Overview', details), panel('Update this user', h('div', { class: 'panel-body' }, f))),
    perms.el, topic.el);
  replace(main, adminHead('users', h('span', { id: 'user-title', text: name }), 'User', [del],
    [h('a', { href: '#/admin/users', text: 'Users' })]), missing, body);
  let filled = false;
  async function update() {
    try {
      current = await api('GET', base);
    } catch (e) {
      if (e.status === 404) { body.hidden = true; del.hidden = true; missing.hidden = false; return; }
      throw e;
    }
    if (!filled) { tags.el.value = (current.tags || []).join(', '); filled = true; }
    replace(details, kvTable([
      ['Name', current.name], ['Tags', h('span', { id: 'user-tags-shown' }, tagBadges(current.tags))],
      ['Has password', current.password_hash ? 'yes' : 'no'], ['Hashing', current.hashing_algorithm],
      ['Limits', Object.keys(current.limits || {}).length ? jsonText(current.limits) : 'none'],
    ]));
    await Promise.all([perms.update(), topic.update()]);
  }
  return { update, destroy() {} };
}

// ------------------------------------------------------------------ virtual hosts
export function VhostsView(main) {
  const denied = guard(main, 'vhosts', 'Virtual hosts');
  if (denied) return denied;
  const list = h('div', { class: 'panel-body flush' });
  const name = input('vhost-name');
  const desc = input('vhost-description');
  const vtags = input('vhost-tags', { placeholder: 'comma separated' });
  const qtype = select('vhost-queue-type', [['classic', 'Classic'], ['quorum', 'Quorum'], ['stream', 'Stream']], 'classic');
  const f = form('add-vhost-form', formGrid([['Name', name], ['Description', desc], ['Tags', vtags], ['Default queue type', qtype]]),
    'Add virtual host', async () => {
      const n = name.value.trim();
      if (!n) throw new Error('A virtual host needs a name.');
      await api('PUT', `/vhosts/${seg(n)}`, { description: desc.value, tags: vtags.value, default_queue_type: qtype.value });
      name.value = desc.value = vtags.value = '';
      forgetVhosts();
      refreshNow();
      return `Virtual host “${n}” added.`;
    });
  replace(main, adminHead('vhosts', 'Virtual hosts'), panel('All virtual hosts', list), foldPanel('Add a new virtual host', f, { id: 'add-vhost', open: true }));
  async function update() {
    const [vhosts, limits] = await Promise.all([api('GET', '/vhosts'), api('GET', '/vhost-limits')]);
    const lim = {};
    for (const l of limits) lim[l.vhost] = l.value;
    replace(list, dataTable('vhosts-table', [
      { label: 'Name', cls: 'name', render: (v) => h('a', { href: `#/admin/vhosts/${seg(v.name)}`, text: v.name }) },
      { label: 'Description', render: (v) => v.description || '' },
      { label: 'Tags', render: (v) => tagBadges(v.tags) },
      { label: 'Default queue type', render: (v) => v.default_queue_type || 'classic' },
      { label: 'Limits', render: (v) => lim[v.name] ? jsonText(lim[v.name]) : h('span', { class: 'muted', text: 'none' }) },
      { label: 'Ready', num: true, render: (v) => num(v.messages_ready) },
      { label: 'Unacked', num: true, render: (v) => num(v.messages_unacknowledged) },
      { label: 'Total', num: true, render: (v) => num(v.messages) },
      { label: 'Publish', num: true, render: (v) => rateText(rate(v.message_stats, 'publish')) },
    ], vhosts, 'No virtual hosts.', (v) => ({ 'data-name': v.name })));
  }
  return { update, destroy() {} };
}

function VhostLimitsForm(id, fixedVhost) {
  const vhost = fixedVhost !== undefined ? null : vhostSelect(id + '-vhost');
  const limit = select(id + '-name', [['max-connections', 'max-connections'], ['max-queues', 'max-queues']]);
  const value = input(id + '-value', { type: 'number', min: '-1', step: '1' });
  return form(id, formGrid([vhost ? ['Virtual host', vhost] : null, ['Limit', limit], ['Value', value, 'A negative value means no limit; 0 refuses every new one.']]),
    'Set limit', async () => {
      const v = fixedVhost !== undefined ? fixedVhost : vhost.value;
      if (!/^-?\d+$/.test(value.value.trim())) throw new Error('The value is a whole number.');
      await api('PUT', `/vhost-limits/${seg(v)}/${limit.value}`, { value: parseInt(value.value, 10) });
      value.value = '';
      refreshNow();
      return `Limit ${limit.value} of “${v}” set.`;
    });
}

function vhostLimitRows(limits) {
  const rows = [];
  for (const l of limits) for (const [k, v] of Object.entries(l.value || {}).sort()) rows.push({ vhost: l.vhost, name: k, value: v });
  return rows;
}

function vhostLimitsTable(id, rows, withVhost) {
  return dataTable(id, [
    withVhost ? { label: 'Virtual host', render: (r) => r.vhost } : null,
    { label: 'Limit', render: (r) => r.name },
    { label: 'Value', num: true, render: (r) => num(r.value) },
    can.admin() ? { label: '', render: (r) => h('button', { type: 'button', class: 'btn small danger clear-limit', text: 'Clear', onclick: async (e) => {
      await act(e.target, () => api('DELETE', `/vhost-limits/${seg(r.vhost)}/${r.name}`), `Limit ${r.name} of “${r.vhost}” cleared.`, refreshNow);
    } }) } : null,
  ].filter(Boolean), rows, 'No limits.', (r) => ({ 'data-vhost': r.vhost, 'data-limit': r.name }));
}

export function VhostView(main, name) {
  const denied = guard(main, 'vhosts', 'Virtual host');
  if (denied) return denied;
  const base = `/vhosts/${seg(name)}`;
  const details = h('div', { class: 'panel-body', id: 'vhost-details' });
  const limits = h('div', { class: 'panel-body flush', id: 'vhost-limits' });
  const perms = PermissionsPanel({ vhost: name });
  const topic = TopicPermissionsPanel({ vhost: name });
  const desc = input('edit-vhost-description');
  const vtags = input('edit-vhost-tags', { placeholder: 'comma separated' });
  const qtype = select('edit-vhost-queue-type', [['classic', 'Classic'], ['quorum', 'Quorum'], ['stream', 'Stream']]);
  const f = form('edit-vhost-form', formGrid([['Description', desc], ['Tags', vtags], ['Default queue type', qtype]]), 'Update virtual host', async () => {
    await api('PUT', base, { description: desc.value, tags: vtags.value, default_queue_type: qtype.value });
    refreshNow();
    return 'Virtual host updated.';
  });
  const del = h('button', { type: 'button', class: 'btn danger solid', id: 'delete-vhost-button', text: 'Delete virtual host' });
  del.addEventListener('click', async () => {
    if (!await confirmBox('Delete virtual host', `Delete “${name}” with all its queues, exchanges, messages and permissions? Its connections are closed.`, 'Delete')) return;
    await act(del, () => api('DELETE', base), `Virtual host “${name}” deleted.`, () => { forgetVhosts(); location.hash = '#/admin/vhosts'; });
  });
  const missing = errorBox(`There is no virtual host “${name}”.`);
  missing.hidden = true;
  const body = h('div', null,
    h('div', { class: 'grid two' }, panel('Overview', details), panel('Update this virtual host', h('div', { class: 'panel-body' }, f))),
    h('section', { class: 'panel', id: 'vhost-limits-panel' }, h('h2', null, 'Limits'), limits,
      h('div', { class: 'panel-body bind-form' }, h('h3', { text: 'Set a limit' }), VhostLimitsForm('vhost-limit-form', name))),
    perms.el, topic.el);
  replace(main, adminHead('vhosts', h('span', { id: 'vhost-title', text: name }), 'Virtual host', [del],
    [h('a', { href: '#/admin/vhosts', text: 'Virtual hosts' })]), missing, body);
  let filled = false;
  async function update() {
    let v;
    try {
      v = await api('GET', base + '?' + rangeQuery(['lengths', 'msg_rates']));
    } catch (e) {
      if (e.status === 404) { body.hidden = true; del.hidden = true; missing.hidden = false; return; }
      throw e;
    }
    if (!filled) {
      desc.value = v.description || '';
      vtags.value = (v.tags || []).join(', ');
      qtype.value = v.default_queue_type || 'classic';
      filled = true;
    }
    replace(details, kvTable([
      ['Name', v.name], ['Description', v.description || ''], ['Tags', tagBadges(v.tags)],
      ['Default queue type', v.default_queue_type || 'classic'], ['Tracing', v.tracing ? 'on' : 'off'],
      ['Messages', `${num(v.messages)} (ready ${num(v.messages_ready)}, unacked ${num(v.messages_unacknowledged)})`],
      ['Publish rate', rateText(rate(v.message_stats, 'publish'))],
    ]));
    replace(limits, vhostLimitsTable('vhost-limits-table', vhostLimitRows(await api('GET', `/vhost-limits/${seg(name)}`)), false));
    await Promise.all([perms.update(), topic.update()]);
  }
  return { update, destroy() {} };
}

// ------------------------------------------------------------------ policies
// The definition keys Usagi applies (core/policies.py): to queues, and alternate-exchange to exchanges.
const POLICY_KEYS = [
  { key: 'message-ttl', label: 'Message TTL', type: 'number' },
  { key: 'expires', label: 'Auto expire', type: 'number' },
  { key: 'max-length', label: 'Max length', type: 'number' },
  { key: 'max-length-bytes', label: 'Max length bytes', type: 'number' },
  { key: 'overflow', label: 'Overflow behaviour', type: 'string', value: 'reject-publish' },
  { key: 'dead-letter-exchange', label: 'Dead letter exchange', type: 'string' },
  { key: 'dead-letter-routing-key', label: 'Dead letter routing key', type: 'string' },
  { key: 'delivery-limit', label: 'Delivery limit', type: 'number' },
  { key: 'alternate-exchange', label: 'Alternate exchange', type: 'string' },
];
// what an operator policy bounds (the lower of it and the policy or argument wins)
const OPERATOR_KEYS = [
  { key: 'message-ttl', label: 'Message TTL', type: 'number' },
  { key: 'expires', label: 'Auto expire', type: 'number' },
  { key: 'max-length', label: 'Max length', type: 'number' },
  { key: 'max-length-bytes', label: 'Max length bytes', type: 'number' },
  { key: 'delivery-limit', label: 'Delivery limit', type: 'number' },
];
const APPLY_TO = [['all', 'Exchanges and queues'], ['exchanges', 'Exchanges'], ['queues', 'Queues [All types]'],
  ['classic_queues', 'Queues [Classic]'], ['quorum_queues', 'Queues [Quorum]'], ['streams', 'Streams']];

/* The form that adds or updates a (operator) policy; edit(p) fills it with a policy. */
function PolicyForm(id, operator) {
  const vhost = vhostSelect(id + '-vhost');
  const name = input(id + '-name');
  const pattern = input(id + '-pattern', { placeholder: '^amq\\.  (a regular expression)' });
  // operator policies bound queue limits: RabbitMQ's UI offers them for queues only
  const applyTo = select(id + '-apply-to', operator ? APPLY_TO.filter(([v]) => v !== 'exchanges' && v !== 'all') : APPLY_TO, operator ? 'queues' : 'all');
  const priority = input(id + '-priority', { type: 'number', value: '0' });
  const def = KeyValueEditor(id + '-definition', operator ? OPERATOR_KEYS : POLICY_KEYS);
  const f = form(id, formGrid([
    ['Virtual host', vhost], ['Name', name], ['Pattern', pattern], ['Apply to', applyTo], ['Priority', priority],
    ['Definition', def.el],
  ]), operator ? 'Add / update operator policy' : 'Add / update policy', async () => {
    const n = name.value.trim();
    if (!n) throw new Error('A policy needs a name.');
    const body = { pattern: pattern.value, 'apply-to': applyTo.value, definition: def.value(),
      priority: parseInt(priority.value || '0', 10) || 0 };
    await api('PUT', `/${operator ? 'operator-policies' : 'policies'}/${seg(vhost.value)}/${seg(n)}`, body);
    refreshNow();
    return `${operator ? 'Operator policy' : 'Policy'} “${n}” saved in “${vhost.value}”.`;
  });
  function edit(p) {
    vhost.value = p.vhost;
    if (vhost.value !== p.vhost) { vhost.appendChild(h('option', { value: p.vhost, text: p.vhost })); vhost.value = p.vhost; }
    name.value = p.name;
    pattern.value = p.pattern;
    applyTo.value = p['apply-to'] || 'all';
    priority.value = String(p.priority || 0);
    def.reset(p.definition || {});
    f.scrollIntoView({ block: 'center' });
    name.focus();
  }
  return { el: f, edit };
}

function policiesTable(id, items, operator, editable, onEdit) {
  return dataTable(id, [
    { label: 'Virtual host', render: (p) => p.vhost },
    { label: 'Name', cls: 'name', render: (p) => p.name },
    { label: 'Pattern', render: (p) => patternCell(p.pattern) },
    { label: 'Apply to', render: (p) => p['apply-to'] },
    { label: 'Definition', cls: 'mono', render: (p) => Object.entries(p.definition || {}).map(([k, v]) => h('div', { text: `${k}: ${JSON.stringify(v)}` })) },
    { label: 'Priority', num: true, render: (p) => String(p.priority) },
    editable ? { label: '', render: (p) => h('span', { class: 'row-actions' },
      h('button', { type: 'button', class: 'btn small edit-policy', text: 'Edit', onclick: () => onEdit(p) }),
      h('button', { type: 'button', class: 'btn small danger delete-policy', text: 'Delete', onclick: async (e) => {
        if (!await confirmBox(operator ? 'Delete operator policy' : 'Delete policy', `Delete “${p.name}” in “${p.vhost}”?`, 'Delete')) return;
        await act(e.target, () => api('DELETE', `/${operator ? 'operator-policies' : 'policies'}/${seg(p.vhost)}/${seg(p.name)}`), `“${p.name}” deleted.`, refreshNow);
      } })) } : null,
  ].filter(Boolean), items, operator ? 'No operator policies.' : 'No policies.', (p) => ({ 'data-vhost': p.vhost, 'data-name': p.name }));
}

export function PoliciesView(main) {
  const policyBody = h('div', { class: 'panel-body flush' });
  const opBody = h('div', { class: 'panel-body flush' });
  const pform = can.policies() ? PolicyForm('policy-form', false) : null;
  const oform = can.admin() ? PolicyForm('operator-policy-form', true) : null;
  replace(main, adminHead('policies', 'Policies', can.policies() ? null : 'Listed for you; policymakers and administrators change them.'),
    panel('User policies', policyBody, { id: 'policies-panel' }),
    pform ? foldPanel('Add / update a policy', pform.el, { id: 'add-policy', open: true }) : null,
    panel('Operator policies', opBody, { id: 'operator-policies-panel', hint: 'limits that bound what users and policies set' }),
    oform ? foldPanel('Add / update an operator policy', oform.el, { id: 'add-operator-policy' }) : null);
  async function update() {
    const [ps, ops] = await Promise.all([api('GET', '/policies'), api('GET', '/operator-policies')]);
    replace(policyBody, policiesTable('policies-table', ps, false, !!pform, (p) => pform.edit(p)));
    replace(opBody, policiesTable('operator-policies-table', ops, true, !!oform, (p) => {
      document.querySelector('#add-operator-policy .panel-body').hidden = false;
      oform.edit(p);
    }));
  }
  return { update, destroy() {} };
}

// ------------------------------------------------------------------ limits
export function LimitsView(main) {
  const vbody = h('div', { class: 'panel-body flush' });
  const ubody = h('div', { class: 'panel-body flush' });
  const admin = can.admin();
  let uform = null, userSelect = null;
  if (admin) {
    userSelect = select('user-limit-user', []);
    const user = userSelect;
    const limit = select('user-limit-name', [['max-connections', 'max-connections'], ['max-channels', 'max-channels']]);
    const value = input('user-limit-value', { type: 'number', min: '-1', step: '1' });
    uform = form('user-limit-form', formGrid([['User', user], ['Limit', limit], ['Value', value, 'A negative value means no limit.']]), 'Set limit', async () => {
      if (!/^-?\d+$/.test(value.value.trim())) throw new Error('The value is a whole number.');
      await api('PUT', `/user-limits/${seg(user.value)}/${limit.value}`, { value: parseInt(value.value, 10) });
      value.value = '';
      refreshNow();
      return `Limit ${limit.value} of “${user.value}” set.`;
    });
  }
  replace(main, adminHead('limits', 'Limits', admin ? null : 'Listed for you; administrators change them.'),
    h('section', { class: 'panel', id: 'vhost-limits-panel' }, h('h2', null, 'Virtual host limits'), vbody,
      admin ? h('div', { class: 'panel-body bind-form' }, h('h3', { text: 'Set a virtual host limit' }), VhostLimitsForm('limit-form')) : null),
    admin ? h('section', { class: 'panel', id: 'user-limits-panel' }, h('h2', null, 'User limits'), ubody,
      h('div', { class: 'panel-body bind-form' }, h('h3', { text: 'Set a user limit' }), uform)) : null);
  async function update() {
    replace(vbody, vhostLimitsTable('limits-table', vhostLimitRows(await api('GET', '/vhost-limits')), true));
    if (admin) {
      await fillUsers(userSelect);
      const rows = [];
      for (const l of await api('GET', '/user-limits')) for (const [k, v] of Object.entries(l.value || {}).sort()) rows.push({ user: l.user, name: k, value: v });
      replace(ubody, dataTable('user-limits-table', [
        { label: 'User', render: (r) => r.user }, { label: 'Limit', render: (r) => r.name }, { label: 'Value', num: true, render: (r) => num(r.value) },
        { label: '', render: (r) => h('button', { type: 'button', class: 'btn small danger clear-user-limit', text: 'Clear', onclick: async (e) => {
          await act(e.target, () => api('DELETE', `/user-limits/${seg(r.user)}/${r.name}`), `Limit ${r.name} of “${r.user}” cleared.`, refreshNow);
        } }) },
      ], rows, 'No user limits.', (r) => ({ 'data-user': r.user, 'data-limit': r.name })));
    }
  }
  return { update, destroy() {} };
}

// ------------------------------------------------------------------ feature flags
export function FeatureFlagsView(main) {
  const denied = guard(main, 'feature-flags', 'Feature flags');
  if (denied) return denied;
  const flags = h('div', { class: 'panel-body flush' });
  const node = h('div', { class: 'panel-body', id: 'node-features' });
  replace(main, adminHead('feature-flags', 'Feature flags', 'What this node supports, under the names RabbitMQ gives its feature flags.'),
    panel('Feature flags', flags), panel('This node', node));
  let shown = false;
  async function update() {
    if (shown) return;      // nothing here changes while the node runs
    const [ff, nodes, ov] = await Promise.all([api('GET', '/feature-flags'), api('GET', '/nodes'), api('GET', '/overview?columns=exchange_types,rabbitmq_version,usagi_version')]);
    replace(flags, dataTable('feature-flags-table', [
      { label: 'Name', cls: 'name', render: (f) => f.name },
      { label: 'State', render: (f) => h('span', { class: 'state ' + (f.state === 'enabled' ? 'running' : 'idle'), text: f.state }) },
      { label: 'Stability', render: (f) => f.stability },
      { label: 'Description', render: (f) => f.desc },
    ], ff, 'No feature flags.', (f) => ({ 'data-name': f.name })));
    const n = nodes[0] || {};
    replace(node, kvTable([
      ['Version', `Usagi ${ov.usagi_version || ''}, RabbitMQ ${ov.rabbitmq_version || ''} compatible`],
      ['Exchange types', (ov.exchange_types || n.exchange_types || []).map((x) => x.name).join(', ')],
      ['Queue types', ['classic'].concat(ff.some((f) => f.name === 'quorum_queue') ? ['quorum'] : [], ff.some((f) => f.name === 'stream_queue') ? ['stream'] : []).join(', ')],
      ['Authentication', (n.auth_mechanisms || []).filter((m) => m.enabled).map((m) => m.name).join(', ')],
      ['Plugins', (n.enabled_plugins || []).join(', ')],
    ]));
    shown = true;
  }
  return { update, destroy() {} };
}

// ------------------------------------------------------------------ definitions
export function DefinitionsView(main) {
  const denied = guard(main, 'definitions', 'Definitions');
  if (denied) return denied;
  const exportVhost = h('select', { id: 'export-vhost' }, h('option', { value: '', text: 'All virtual hosts' }));
  const importVhost = h('select', { id: 'import-vhost' }, h('option', { value: '', text: 'All virtual hosts' }));
  function fillVhosts() {
    vhostNames(true).then((names) => {
      for (const sel of [exportVhost, importVhost]) {
        const cur = sel.value;
        replace(sel, h('option', { value: '', text: 'All virtual hosts' }), names.map((n) => h('option', { value: n, text: n })));
        if (names.includes(cur)) sel.value = cur;
      }
    }).catch(() => {});
  }
  fillVhosts();
  const output = h('textarea', { id: 'export-output', rows: 10, readonly: true, placeholder: 'The exported definitions appear here.' });
  const link = h('a', { id: 'export-download', class: 'btn', hidden: true, text: 'Save as file' });
  const exportForm = form('export-form', formGrid([['Virtual host', exportVhost]]), 'Export definitions', async () => {
    const path = exportVhost.value ? `/definitions/${seg(exportVhost.value)}` : '/definitions';
    const defs = await api('GET', path);
    const text = JSON.stringify(defs, null, 2);
    output.value = text;
    if (link.href && link.href.startsWith('blob:')) URL.revokeObjectURL(link.href);
    link.href = URL.createObjectURL(new Blob([text], { type: 'application/json' }));
    const day = new Date().toISOString().slice(0, 10);
    link.download = `usagi_${(exportVhost.value || 'all').replace(/[^A-Za-z0-9_.-]/g, '_')}_${day}.json`;
    link.hidden = false;
    const counts = ['users', 'vhosts', 'permissions', 'policies', 'queues', 'exchanges', 'bindings']
      .filter((k) => Array.isArray(defs[k])).map((k) => `${defs[k].length} ${k}`).join(', ');
    return `Exported: ${counts}.`;
  }, link);
  const file = h('input', { type: 'file', id: 'import-file', accept: '.json,application/json' });
  const pasted = h('textarea', { id: 'import-text', rows: 6, placeholder: 'or paste definitions (JSON) here' });
  const importForm = form('import-form', formGrid([['Definitions file', file], ['', pasted], ['Virtual host', importVhost,
    'With one virtual host chosen, the file\'s objects go into it whatever vhost they name.']]), 'Import definitions', async () => {
    let text = pasted.value.trim();
    if (file.files && file.files.length) text = await file.files[0].text();
    if (!text) throw new Error('Choose a file or paste definitions.');
    try { JSON.parse(text); } catch (e) { throw new Error('The definitions are not valid JSON: ' + e.message); }
    if (!await confirmBox('Import definitions', 'Import these definitions? Objects in them are created or replaced; nothing is deleted.', 'Import')) return '';
    await api('POST', importVhost.value ? `/definitions/${seg(importVhost.value)}` : '/definitions', text);
    fillVhosts();
    file.value = '';
    pasted.value = '';
    return 'Definitions imported.';
  });
  replace(main, adminHead('definitions', 'Definitions', 'Users, virtual hosts, permissions, policies, queues, exchanges and bindings, as RabbitMQ exports them.'),
    h('div', { class: 'grid two' },
      panel('Export definitions', h('div', { class: 'panel-body' }, exportForm, output), { id: 'export-panel' }),
      panel('Import definitions', h('div', { class: 'panel-body' }, importForm), { id: 'import-panel' })));
  return { update() {}, destroy() { if (link.href && link.href.startsWith('blob:')) URL.revokeObjectURL(link.href); } };
}

