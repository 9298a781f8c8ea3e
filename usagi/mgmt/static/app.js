/* Usagi management dashboard: plain JavaScript modules, no build step, no external assets.
 *
 * This entry module logs in (HTTP basic auth against /api/whoami; the credentials live in
 * sessionStorage for the tab's lifetime), shows the navigation the user's tags allow and picks
 * the page from the URL hash:
 *   #/  #/connections[/NAME]  #/channels[/NAME]  #/exchanges[/VHOST/NAME]  #/queues[/VHOST/NAME]
 *   #/admin/users[/NAME]  #/admin/vhosts[/NAME]  #/admin/policies  #/admin/limits
 *   #/admin/feature-flags  #/admin/definitions
 * Pages live in overview.js, objects.js and admin.js; shared pieces in lib.js, charts in charts.js.
 */
import { S, $, api, b64, refreshNow, clear } from './lib.js';
import { OverviewView } from './overview.js';
import { TABLES, TableView, QueueView, ExchangeView, ConnectionView, ChannelView } from './objects.js';
import {
  ADMIN_TABS, UsersView, UserView, VhostsView, VhostView, PoliciesView, LimitsView, FeatureFlagsView, DefinitionsView,
} from './admin.js';

const AUTH_KEY = 'usagi.auth';
const USER_KEY = 'usagi.user';
const REFRESH_KEY = 'usagi.refresh';
const RANGE_KEY = 'usagi.range';

const ADMIN_VIEWS = {
  users: (main, args) => (args.length ? UserView(main, args[0]) : UsersView(main)),
  vhosts: (main, args) => (args.length ? VhostView(main, args[0]) : VhostsView(main)),
  policies: (main) => PoliciesView(main),
  limits: (main) => LimitsView(main),
  'feature-flags': (main) => FeatureFlagsView(main),
  definitions: (main) => DefinitionsView(main),
};

function parseRoute() {
  const raw = location.hash.replace(/^#\/?/, '');
  const parts = raw ? raw.split('/').map((p) => { try { return decodeURIComponent(p); } catch (e) { return p; } }) : [];
  const [first] = parts;
  if (!parts.length || first === '' || first === 'overview') return { nav: 'overview', make: (m) => OverviewView(m) };
  if (first === 'queues' && parts.length === 3) return { nav: 'queues', make: (m) => QueueView(m, parts[1], parts[2]) };
  if (first === 'exchanges' && parts.length === 3) return { nav: 'exchanges', make: (m) => ExchangeView(m, parts[1], parts[2]) };
  if (first === 'connections' && parts.length === 2) return { nav: 'connections', make: (m) => ConnectionView(m, parts[1]) };
  if (first === 'channels' && parts.length === 2) return { nav: 'channels', make: (m) => ChannelView(m, parts[1]) };
  if (TABLES[first] && parts.length === 1) return { nav: first, make: (m) => TableView(m, TABLES[first]) };
  if (first === 'admin') {
    let tab = parts[1];
    if (!tab || !ADMIN_VIEWS[tab]) {
      tab = (ADMIN_TABS.find((t) => t.allowed()) || ADMIN_TABS[2]).id;
      return { redirect: `#/admin/${tab}` };
    }
    return { nav: 'admin', make: (m) => ADMIN_VIEWS[tab](m, parts.slice(2)) };
  }
  return { nav: 'overview', make: (m) => OverviewView(m) };
}

function navigate() {
  if (!S.auth) return;
  const route = parseRoute();
  if (route.redirect) { location.replace(route.redirect); return; }
  if (S.view && S.view.destroy) S.view.destroy();
  S.gen++;
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.dataset.nav === route.nav);
  const main = $('#main');
  main.dataset.view = location.hash.replace(/^#\/?/, '').split('/')[0] || 'overview';
  S.view = route.make(main);
  window.scrollTo(0, 0);
  refreshNow();
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
  $('#user-tags').textContent = S.user && S.user.tags.length ? S.user.tags.join(', ') : 'no tags';
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
  sessionStorage.removeItem(AUTH_KEY);
  sessionStorage.removeItem(USER_KEY);
  showLogin('');
}

function init() {
  S.onExpired = sessionExpired;
  const saved = Number(localStorage.getItem(REFRESH_KEY));
  if ([0, 2000, 5000, 10000, 30000].includes(saved) && localStorage.getItem(REFRESH_KEY) !== null) S.refreshMs = saved;
  const sel = $('#refresh-interval');
  sel.value = String(S.refreshMs);
  sel.addEventListener('change', () => {
    S.refreshMs = Number(sel.value);
    localStorage.setItem(REFRESH_KEY, sel.value);
    refreshNow();
  });
  const savedRange = Number(localStorage.getItem(RANGE_KEY));
  if ([60, 600].includes(savedRange)) S.rangeAge = savedRange;
  const range = $('#chart-range');
  range.value = String(S.rangeAge);
  range.addEventListener('change', () => {
    S.rangeAge = Number(range.value);
    localStorage.setItem(RANGE_KEY, range.value);
    navigate();             // the charts' titles say the range: the page is made again
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
      $('#login-error').textContent = (err.status === 401 && /^(login failed|not_authorized)?$/i.test(err.message.trim()))
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
    api('GET', '/whoami').then((who) => { S.user = who; sessionStorage.setItem(USER_KEY, JSON.stringify(who)); showApp(); })
      .catch((e) => { if (e.status !== 401) showLogin(e.message); });
  } else {
    showLogin('');
  }
}

init();
