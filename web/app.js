// Flotilla dashboard: plain JavaScript, no build step, served from the binary.
//
// Data flow (the server's cost grows with changes, not with clients × sessions):
//   1. one GET /api/v1/board on load: every session as a card, plus the event `cursor`;
//   2. then the event stream over /api/v1/ws?after=<cursor>: each event updates its card;
//      after a disconnect the socket reconnects with after=<last id seen>, so nothing is missed
//      and nothing is re-listed;
//   3. a single session is read (GET /api/v1/sessions/{id}) only when an event says something
//      a card cannot derive changed (a new session, a reaction's counters, a restore).
// Card DOM updates are keyed by session id and batched in one requestAnimationFrame.

const TOKEN_KEY = 'flotilla.token';
const ZONES = [
  { key: 'needs', title: 'Needs you', states: ['needs_input', 'stuck', 'errored'] },
  { key: 'merge', title: 'Ready to merge', states: ['mergeable'] },
  { key: 'review', title: 'CI & review', states: ['ci_failed', 'changes_requested', 'review_pending', 'approved'] },
  { key: 'working', title: 'Working', states: ['spawning', 'working', 'pr_open'] },
  { key: 'done', title: 'Done', states: ['merged', 'done', 'killed', 'terminated'] },
];
const ALL_STATES = ZONES.flatMap((z) => z.states);
const ZONE_OF_STATE = new Map(ZONES.flatMap((z) => z.states.map((s) => [s, z.key])));
const PR_STATES = new Set(['pr_open', 'ci_failed', 'review_pending', 'changes_requested', 'approved', 'mergeable', 'merged']);
const ENDED = new Set(['merged', 'done', 'killed', 'terminated', 'errored']);
const ACTIVITY_OF_KIND = {
  'agent.active': 'active', 'agent.idle': 'idle', 'agent.waiting_input': 'waiting_input', 'agent.exited': 'exited',
};
// Events after which a card needs fields no event carries (branch, workspace, trackers).
const REFETCH_KINDS = new Set(['session.created', 'runtime.started', 'session.restore_requested']);
const TIMELINE_LIMIT = 500;

const $ = (id) => document.getElementById(id);
const app = {
  token: localStorage.getItem(TOKEN_KEY) || '',
  sessions: new Map(), // id -> card model
  cards: new Map(), // id -> element
  columns: new Map(), // zone -> {list, count}
  dirty: new Set(),
  frame: 0,
  lastEventId: 0,
  socket: null,
  retry: 0,
  loaded: false,
  projects: [],
  agents: [],
  filter: { project: '', state: '', text: '' },
  view: 'board',
  page: null, // the open session page: {id, detail, term, termSocket}
  refetch: new Set(),
  refetchTimer: 0,
  convTimer: 0,
};

// ---- API ------------------------------------------------------------------------------------

class AuthError extends Error {}

async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (app.token) headers.Authorization = `Bearer ${app.token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (res.status === 401) {
    showLogin('The API refused the token.');
    throw new AuthError('unauthorized');
  }
  const text = await res.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { json = null; }
  if (!res.ok) {
    const msg = json && json.error ? json.error.message : `${res.status} ${res.statusText}`;
    const err = new Error(msg);
    err.status = res.status;
    throw err;
  }
  return json;
}

function wsUrl(path, params) {
  const u = new URL(path, window.location.href);
  u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
  for (const [k, v] of Object.entries(params)) u.searchParams.set(k, String(v));
  if (app.token) u.searchParams.set('access_token', app.token);
  return u.toString();
}

// ---- helpers ----------------------------------------------------------------------------------

function esc(s) {
  return String(s ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
}
function safeUrl(u) {
  return typeof u === 'string' && /^https?:\/\//i.test(u) ? u : null;
}
function age(at) {
  if (!at) return '';
  const s = Math.max(0, Math.round((Date.now() - Date.parse(at)) / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}
function firstLine(s, n = 140) {
  const line = String(s || '').split('\n').find((l) => l.trim()) || '';
  return line.length > n ? `${line.slice(0, n - 1)}…` : line;
}

// ---- card model -------------------------------------------------------------------------------

// Builds a card model from a board row or a session detail (which has `prompt` and
// `trackers`), keeping what the source does not carry from `prev`.
function toModel(src, prev = {}) {
  const reactions = src.reactions || (src.trackers || []).map((t) => ({
    reaction: t.reaction, attempts: t.attempts, escalated: t.escalated,
  }));
  const m = {
    ...prev,
    id: src.id,
    project: src.project,
    state: src.state,
    reason: src.reason ?? null,
    agent: src.agent,
    runtime: src.runtime,
    branch: src.branch ?? null,
    pr: src.pr ?? null,
    issue: src.issue ?? null,
    issue_url: src.issue_url ?? (src.meta && src.meta.issue_url) ?? prev.issue_url ?? null,
    task: src.task ?? (src.prompt ? src.prompt.slice(0, 240) : prev.task ?? null),
    role: src.role ?? (src.meta && src.meta.role) ?? prev.role ?? null,
    activity: src.activity,
    activity_at: src.activity_at ?? null,
    created_at: src.created_at,
    updated_at: src.updated_at,
    reactions,
    last_event: newer(src.last_event, prev.last_event),
  };
  if (!m.ci) m.ci = ciFromState(m.state);
  if (!m.review) m.review = reviewFromState(m.state);
  return m;
}
function newer(a, b) {
  if (!a) return b || null;
  if (!b) return a;
  return a.id >= b.id ? a : b;
}
function ciFromState(st) {
  if (st === 'ci_failed') return 'failing';
  if (st === 'mergeable' || st === 'merged') return 'passing';
  if (PR_STATES.has(st)) return 'pending';
  return null;
}
function reviewFromState(st) {
  if (st === 'changes_requested') return 'changes_requested';
  if (st === 'approved' || st === 'mergeable' || st === 'merged') return 'approved';
  if (st === 'review_pending') return 'pending';
  return null;
}
function zoneOf(m) {
  const escalated = (m.reactions || []).some((r) => r.escalated);
  if (escalated && !ENDED.has(m.state) && m.state !== 'mergeable') return 'needs';
  return ZONE_OF_STATE.get(m.state) || 'working';
}
function visible(m) {
  const f = app.filter;
  if (f.project && m.project !== f.project) return false;
  if (f.state && m.state !== f.state) return false;
  if (f.text) {
    const hay = `${m.id} ${m.task || ''} ${m.branch || ''} ${m.issue || ''} ${m.agent || ''}`.toLowerCase();
    if (!hay.includes(f.text)) return false;
  }
  return true;
}

// ---- applying events ------------------------------------------------------------------------

function applyEvent(e) {
  if (e.id > app.lastEventId) app.lastEventId = e.id;
  if (!e.session_id) {
    if (/^(chat|conversation)\./.test(e.kind)) scheduleConversations();
    return;
  }
  if (/^(chat|conversation)\./.test(e.kind)) scheduleConversations();
  const id = e.session_id;
  const d = e.data || {};
  let m = app.sessions.get(id);
  if (!m) {
    if (e.kind !== 'session.created') {
      // A session we have not seen (created before our cursor but missed, or a race): read it.
      queueRefetch(id);
      return;
    }
    m = {
      id, project: d.project, agent: d.agent, state: d.state || 'spawning', reason: null, runtime: null,
      branch: null, pr: null, issue: null, task: null, activity: 'unknown', activity_at: null,
      created_at: e.at, updated_at: e.at, reactions: [], last_event: null, ci: null, review: null,
    };
    app.sessions.set(id, m);
  }
  if (d.state && d.state !== m.state) {
    m.state = d.state;
    if (!PR_STATES.has(m.state)) { m.ci = null; m.review = null; }
    m.ci = ciFromState(m.state) || m.ci;
    m.review = reviewFromState(m.state) || m.review;
  }
  if ('reason' in d) m.reason = d.reason;
  if (d.state || d.to) m.updated_at = e.at;
  const act = ACTIVITY_OF_KIND[e.kind];
  if (act) { m.activity = act; m.activity_at = e.at; }
  const ev = d.event || {};
  if (ev.pr) m.pr = ev.pr;
  if (e.kind === 'ci.failed') m.ci = 'failing';
  if (e.kind === 'ci.passed' || e.kind === 'merge.ready') m.ci = 'passing';
  if (e.kind === 'review.pending') m.review = 'pending';
  if (e.kind === 'review.changes_requested') m.review = 'changes_requested';
  if (e.kind === 'review.approved' || e.kind === 'merge.ready') m.review = 'approved';
  m.last_event = newer({ id: e.id, kind: e.kind, at: e.at, data: { state: d.state, reason: d.reason, reaction: d.reaction } }, m.last_event);
  const reactionChanged = e.kind.startsWith('reaction.') || (d.effects || []).some((x) => x && x.reaction);
  if (REFETCH_KINDS.has(e.kind) || reactionChanged) queueRefetch(id);
  markDirty(id);
  if (app.page && app.page.id === id) sessionPageEvent(e, reactionChanged);
}

function queueRefetch(id) {
  app.refetch.add(id);
  if (!app.refetchTimer) app.refetchTimer = setTimeout(runRefetch, 150);
}
async function runRefetch() {
  app.refetchTimer = 0;
  const ids = [...app.refetch];
  app.refetch.clear();
  await Promise.all(ids.map(async (id) => {
    try {
      const s = await api('GET', `/api/v1/sessions/${encodeURIComponent(id)}`);
      upsert(s);
    } catch (err) {
      if (!(err instanceof AuthError) && err.status !== 404) console.warn('refetch', id, err);
    }
  }));
}
function upsert(src) {
  const prev = app.sessions.get(src.id) || {};
  app.sessions.set(src.id, toModel(src, prev));
  markDirty(src.id);
}

// ---- rendering the board -----------------------------------------------------------------------

function buildBoard() {
  const board = $('board');
  board.textContent = '';
  for (const z of ZONES) {
    const col = document.createElement('section');
    col.className = `column zone-${z.key}`;
    col.dataset.zone = z.key;
    col.innerHTML = `<h2><span class="title">${esc(z.title)}</span> <span class="count">0</span></h2><div class="cards"></div>`;
    board.append(col);
    app.columns.set(z.key, { el: col, list: col.querySelector('.cards'), count: col.querySelector('.count') });
  }
}

function markDirty(id) {
  app.dirty.add(id);
  if (!app.frame) app.frame = requestAnimationFrame(flush);
}

// Renders every changed card once per frame, however many events arrived.
function flush() {
  app.frame = 0;
  if (!app.loaded) return;
  for (const id of app.dirty) renderCard(id);
  app.dirty.clear();
  updateCounts();
}

function renderCard(id) {
  const m = app.sessions.get(id);
  let el = app.cards.get(id);
  if (!m) { if (el) { el.remove(); app.cards.delete(id); } return; }
  const zone = zoneOf(m);
  const fresh = !el;
  if (fresh) {
    el = document.createElement('article');
    el.className = 'card';
    el.dataset.id = id;
    app.cards.set(id, el);
  }
  el.dataset.state = m.state;
  el.innerHTML = cardHtml(m);
  el.hidden = !visible(m);
  const col = app.columns.get(zone);
  if (fresh || el.dataset.zone !== zone || col.list.firstElementChild !== el) {
    el.dataset.zone = zone;
    col.list.prepend(el); // most recently changed first
  }
}

function cardHtml(m) {
  const task = m.task ? `<div class="task" title="${esc(m.task)}">${esc(firstLine(m.task))}</div>` : '';
  const issueUrl = safeUrl(m.issue_url);
  const issueText = /^\d+$/.test(m.issue || '') ? `#${m.issue}` : m.issue;
  const issue = m.issue
    ? `<span class="issue" title="issue">${issueUrl ? `<a href="${esc(issueUrl)}" target="_blank" rel="noopener">${esc(issueText)}</a>` : esc(issueText)}</span>`
    : '';
  const prUrl = m.pr && safeUrl(m.pr.url);
  const pr = m.pr
    ? `<div class="pr">${prUrl ? `<a href="${esc(prUrl)}" target="_blank" rel="noopener">PR #${esc(m.pr.number)}</a>` : `PR #${esc(m.pr.number)}`}
        ${m.ci ? `<span class="badge ci-${esc(m.ci)}" title="CI">CI ${esc(m.ci)}</span>` : ''}
        ${m.review ? `<span class="badge review-${esc(m.review)}" title="review">${esc(m.review.replace('_', ' '))}</span>` : ''}</div>`
    : '';
  const rx = (m.reactions || []).filter((r) => r.attempts > 0 || r.escalated)
    .map((r) => `<span class="rx${r.escalated ? ' escalated' : ''}" title="reaction ${esc(r.reaction)}: ${esc(r.attempts)} attempt(s)${r.escalated ? ', escalated' : ''}">${esc(r.reaction)} ×${esc(r.attempts)}</span>`)
    .join('');
  const le = m.last_event;
  const last = le ? `<div class="last" title="event #${esc(le.id)}">${esc(le.kind)}${le.data && le.data.reason ? ` (${esc(le.data.reason)})` : ''} · <time data-at="${esc(le.at)}">${age(le.at)}</time> ago</div>` : '';
  return `<header><a class="id" href="#/s/${encodeURIComponent(m.id)}">${esc(m.id)}</a>
      <span class="state state-${esc(m.state)}">${esc(m.state.replace('_', ' '))}</span>
      <time class="age" data-at="${esc(m.created_at)}" title="age">${age(m.created_at)}</time></header>
    ${task}
    <div class="meta">${issue}<span class="branch" title="branch">${esc(m.branch || '—')}</span>
      <span class="agent" title="agent">${esc(m.agent || '')}</span>
      <span class="activity activity-${esc(m.activity)}" title="activity">${esc(m.activity || '')}</span>
      ${m.reason ? `<span class="reason">${esc(m.reason)}</span>` : ''}</div>
    ${pr}${rx ? `<div class="reactions">${rx}</div>` : ''}${last}`;
}

function updateCounts() {
  const counts = new Map(ZONES.map((z) => [z.key, 0]));
  for (const m of app.sessions.values()) if (visible(m)) counts.set(zoneOf(m), counts.get(zoneOf(m)) + 1);
  for (const [k, c] of app.columns) c.count.textContent = String(counts.get(k));
}

function applyFilter() {
  for (const [id, el] of app.cards) el.hidden = !visible(app.sessions.get(id));
  updateCounts();
}

// Ages are text only: refresh them twice a minute, no data involved.
setInterval(() => {
  for (const t of document.querySelectorAll('time[data-at]')) t.textContent = age(t.dataset.at);
}, 30000);

// ---- the event stream -----------------------------------------------------------------------

function setConn(text, cls) {
  const c = $('conn');
  c.textContent = text;
  c.className = `conn ${cls}`;
}

function connect() {
  if (app.socket) return;
  const ws = new WebSocket(wsUrl('/api/v1/ws', { after: app.lastEventId }));
  app.socket = ws;
  setConn('connecting', 'wait');
  ws.onopen = () => { app.retry = 0; setConn('live', 'ok'); };
  ws.onmessage = (msg) => {
    try { applyEvent(JSON.parse(msg.data)); } catch (err) { console.warn('bad event', err); }
  };
  ws.onclose = async () => {
    if (app.socket !== ws) return;
    app.socket = null;
    setConn('reconnecting', 'bad');
    // The upgrade hides its status: ask a cheap authenticated route whether the token is
    // still good before retrying.
    try {
      await api('GET', '/api/v1/sessions/-');
    } catch (err) {
      if (err instanceof AuthError) return;
    }
    const delay = Math.min(30000, 500 * 2 ** app.retry++) * (0.5 + Math.random() / 2);
    setTimeout(connect, delay);
  };
}

function disconnect() {
  const ws = app.socket;
  app.socket = null;
  if (ws) ws.close();
}

// ---- load, login ----------------------------------------------------------------------------

async function load() {
  const b = await api('GET', '/api/v1/board');
  app.sessions.clear();
  for (const el of app.cards.values()) el.remove();
  app.cards.clear();
  app.lastEventId = b.cursor;
  app.projects = b.projects;
  app.agents = b.agents;
  for (const s of b.sessions) app.sessions.set(s.id, toModel(s));
  fillSelects();
  // First render: one fragment per column, most recently changed first.
  const sorted = [...app.sessions.values()].sort((a, b2) => (a.updated_at < b2.updated_at ? 1 : -1));
  const frags = new Map(ZONES.map((z) => [z.key, document.createDocumentFragment()]));
  for (const m of sorted) {
    const el = document.createElement('article');
    el.className = 'card';
    el.dataset.id = m.id;
    el.dataset.state = m.state;
    el.dataset.zone = zoneOf(m);
    el.innerHTML = cardHtml(m);
    el.hidden = !visible(m);
    app.cards.set(m.id, el);
    frags.get(el.dataset.zone).append(el);
  }
  for (const [k, f] of frags) app.columns.get(k).list.append(f);
  app.loaded = true;
  updateCounts();
  connect();
}

function fillSelects() {
  const proj = $('filter-project');
  const keepP = proj.value;
  proj.innerHTML = '<option value="">all</option>' + app.projects.map((p) => `<option>${esc(p.name)}</option>`).join('');
  proj.value = keepP;
  const st = $('filter-state');
  const keepS = st.value;
  st.innerHTML = '<option value="">all</option>' + ALL_STATES.map((s) => `<option value="${s}">${s.replace('_', ' ')}</option>`).join('');
  st.value = keepS;
  $('spawn-project').innerHTML = app.projects.map((p) => `<option>${esc(p.name)}</option>`).join('');
  $('spawn-agent').innerHTML = '<option value="">project default</option>' + app.agents.map((a) => `<option>${esc(a)}</option>`).join('');
}

function showLogin(message) {
  disconnect();
  app.loaded = false;
  $('login').hidden = false;
  $('login-error').textContent = app.token ? message || '' : '';
  $('login-token').focus();
}

async function start() {
  if (!app.token) { showLogin(); return; }
  $('login').hidden = true;
  try {
    await load();
    route();
  } catch (err) {
    if (!(err instanceof AuthError)) {
      setConn('error', 'bad');
      console.error(err);
    }
  }
}

$('login-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  app.token = $('login-token').value.trim();
  localStorage.setItem(TOKEN_KEY, app.token);
  $('login-token').value = '';
  start();
});
$('logout').addEventListener('click', () => {
  localStorage.removeItem(TOKEN_KEY);
  app.token = '';
  closeSessionPage();
  showLogin();
});

// ---- filters ----------------------------------------------------------------------------------

$('filter-project').addEventListener('change', (e) => { app.filter.project = e.target.value; applyFilter(); });
$('filter-state').addEventListener('change', (e) => { app.filter.state = e.target.value; applyFilter(); });
let textTimer = 0;
$('filter-text').addEventListener('input', (e) => {
  clearTimeout(textTimer);
  textTimer = setTimeout(() => { app.filter.text = e.target.value.trim().toLowerCase(); applyFilter(); }, 120);
});

// ---- spawn ------------------------------------------------------------------------------------

$('spawn-open').addEventListener('click', () => {
  $('spawn-error').textContent = '';
  const p = app.projects.find((x) => x.name === app.filter.project) || app.projects[0];
  if (p) $('spawn-project').value = p.name;
  $('spawn-dialog').showModal();
  $('spawn-prompt').focus();
});
$('spawn-cancel').addEventListener('click', () => $('spawn-dialog').close());
$('spawn-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const body = { project: $('spawn-project').value };
  for (const [k, id] of [['prompt', 'spawn-prompt'], ['issue', 'spawn-issue'], ['agent', 'spawn-agent'], ['branch', 'spawn-branch']]) {
    const v = $(id).value.trim();
    if (v) body[k] = v;
  }
  $('spawn-submit').disabled = true;
  try {
    const s = await api('POST', '/api/v1/sessions', body);
    upsert(s);
    $('spawn-dialog').close();
    $('spawn-form').reset();
  } catch (err) {
    $('spawn-error').textContent = err.message;
  } finally {
    $('spawn-submit').disabled = false;
  }
});

// ---- routing ----------------------------------------------------------------------------------

function route() {
  if (!app.loaded) return;
  const h = window.location.hash || '#/';
  const m = h.match(/^#\/s\/(.+)$/);
  if (m) show('session', decodeURIComponent(m[1]));
  else if (h.startsWith('#/conversations')) show('conversations');
  else show('board');
}
window.addEventListener('hashchange', route);

function show(view, id) {
  app.view = view;
  for (const v of ['board', 'session', 'conversations']) $(`view-${v}`).hidden = v !== view;
  for (const a of document.querySelectorAll('[data-nav]')) a.classList.toggle('active', a.dataset.nav === view);
  $('filters').hidden = view !== 'board';
  if (view !== 'session') closeSessionPage();
  if (view === 'session' && (!app.page || app.page.id !== id)) openSessionPage(id);
  if (view === 'conversations') loadConversations();
}

// ---- session page -------------------------------------------------------------------------------

function closeSessionPage() {
  const p = app.page;
  app.page = null;
  if (!p) return;
  p.closed = true;
  if (p.termSocket) p.termSocket.close();
  if (p.term) p.term.dispose();
  if (p.onResize) window.removeEventListener('resize', p.onResize);
  $('terminal').textContent = '';
}

async function openSessionPage(id) {
  closeSessionPage();
  const page = { id, events: new Set() };
  app.page = page;
  $('session-head').innerHTML = `<h1>${esc(id)}</h1>`;
  $('timeline').textContent = '';
  $('reactions-body').textContent = '';
  $('timers').textContent = '';
  $('act-status').textContent = '';
  try {
    const [detail, events] = await Promise.all([
      api('GET', `/api/v1/sessions/${encodeURIComponent(id)}`),
      api('GET', `/api/v1/sessions/${encodeURIComponent(id)}/events?limit=${TIMELINE_LIMIT}`),
    ]);
    if (page.closed) return;
    upsert(detail);
    renderDetail(detail);
    for (const e of events.events) addTimeline(e);
  } catch (err) {
    if (!(err instanceof AuthError)) $('session-head').innerHTML = `<h1>${esc(id)}</h1><p class="error">${esc(err.message)}</p>`;
    return;
  }
  openTerminal(page);
}

function renderDetail(s) {
  // What a send answers: the question shown, so one asked since is not answered unread.
  if (app.page && app.page.id === s.id) app.page.waitingFor = s.waiting_for || null;
  const prUrl = s.pr && safeUrl(s.pr.url);
  const issueUrl = safeUrl(s.meta && s.meta.issue_url);
  $('session-head').innerHTML = `
    <h1>${esc(s.id)} <span class="state state-${esc(s.state)}">${esc(s.state.replace('_', ' '))}</span></h1>
    <dl class="facts">
      <dt>project</dt><dd>${esc(s.project)}</dd>
      <dt>agent</dt><dd>${esc(s.agent)} on ${esc(s.runtime)}</dd>
      <dt>branch</dt><dd>${esc(s.branch || '—')}</dd>
      <dt>PR</dt><dd>${s.pr ? (prUrl ? `<a href="${esc(prUrl)}" target="_blank" rel="noopener">#${esc(s.pr.number)}</a>` : `#${esc(s.pr.number)}`) : '—'}</dd>
      <dt>issue</dt><dd>${s.issue ? (issueUrl ? `<a href="${esc(issueUrl)}" target="_blank" rel="noopener">${esc(s.issue)}</a>` : esc(s.issue)) : '—'}</dd>
      <dt>activity</dt><dd>${esc(s.activity)}${s.activity_at ? ` · ${age(s.activity_at)} ago` : ''}</dd>
      <dt>reason</dt><dd>${esc(s.reason || '—')}</dd>
      ${s.waiting_for ? `<dt>waiting for</dt><dd class="waiting-for">${esc(s.waiting_for)}</dd>` : ''}
      <dt>created</dt><dd>${esc(new Date(s.created_at).toLocaleString())}</dd>
    </dl>
    ${s.prompt ? `<pre class="prompt">${esc(s.prompt)}</pre>` : ''}`;
  $('reactions-body').innerHTML = (s.trackers || []).map((t) => `<tr class="${t.escalated ? 'escalated' : ''}">
      <td>${esc(t.reaction)}</td><td>${esc(t.attempts)}</td><td>${t.escalated ? 'yes' : 'no'}</td>
      <td><time data-at="${esc(t.last_triggered_at)}">${age(t.last_triggered_at)}</time> ago</td></tr>`).join('')
    || '<tr><td colspan="4" class="muted">no reaction has fired</td></tr>';
  $('timers').innerHTML = (s.timers || []).map((t) => `<li>${esc(t.kind)} · ${esc(new Date(t.deadline).toLocaleTimeString())}</li>`).join('')
    || '<li class="muted">none armed</li>';
}

function addTimeline(e) {
  const page = app.page;
  if (!page || page.events.has(e.id)) return;
  page.events.add(e.id);
  const d = e.data || {};
  const li = document.createElement('li');
  li.dataset.id = e.id;
  const change = d.from && d.to && d.from !== d.to ? ` <span class="muted">${esc(d.from)} → ${esc(d.to)}</span>` : '';
  const extra = d.reason ? ` <span class="reason">${esc(d.reason)}</span>` : d.reaction ? ` <span class="rx">${esc(d.reaction)}</span>` : '';
  li.innerHTML = `<time title="${esc(e.at)}">${esc(new Date(e.at).toLocaleTimeString())}</time> <b>${esc(e.kind)}</b>${change}${extra}`;
  const list = $('timeline');
  list.prepend(li); // newest first
  while (list.childElementCount > TIMELINE_LIMIT) list.lastElementChild.remove();
}

let detailTimer = 0;
function sessionPageEvent(e, refresh) {
  addTimeline(e);
  const m = app.sessions.get(e.session_id);
  if (m && e.data && e.data.state) {
    const st = document.querySelector('#session-head .state');
    if (st) { st.textContent = m.state.replace('_', ' '); st.className = `state state-${m.state}`; }
  }
  if (refresh || (e.data && e.data.state)) {
    clearTimeout(detailTimer);
    detailTimer = setTimeout(async () => {
      const page = app.page;
      if (!page) return;
      try {
        const s = await api('GET', `/api/v1/sessions/${encodeURIComponent(page.id)}`);
        if (app.page === page) renderDetail(s);
        if (app.page === page && !page.termSocket && !ENDED.has(s.state) && s.state !== 'spawning') openTerminal(page);
      } catch { /* shown elsewhere */ }
    }, 200);
  }
}

async function act(verb, body) {
  const page = app.page;
  if (!page) return;
  const status = $('act-status');
  status.textContent = `${verb}…`;
  status.className = 'status';
  try {
    const r = await api('POST', `/api/v1/sessions/${encodeURIComponent(page.id)}/${verb}`, body);
    if (verb === 'send') status.textContent = r.delivered ? 'delivered' : 'sent, not confirmed';
    else status.textContent = r.changed === false ? (r.message || 'nothing to do') : `${verb}: done`;
  } catch (err) {
    status.textContent = err.message;
    status.className = 'status error';
  }
}
$('send-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const text = $('send-text').value;
  if (!text.trim()) return;
  $('send-text').value = '';
  const body = { message: text };
  if (app.page && app.page.waitingFor) body.question = app.page.waitingFor;
  act('send', body);
});
$('act-kill').addEventListener('click', () => { if (window.confirm('Kill this session?')) act('kill'); });
$('act-restore').addEventListener('click', () => act('restore'));
$('act-merge').addEventListener('click', () => act('merge'));

// ---- terminal (xterm.js, loaded on first use) --------------------------------------------------------

const scripts = new Map();
function loadScript(src) {
  if (!scripts.has(src)) {
    scripts.set(src, new Promise((resolve, reject) => {
      const s = document.createElement('script');
      s.src = src;
      s.onload = resolve;
      s.onerror = () => reject(new Error(`cannot load ${src}`));
      document.head.append(s);
    }));
  }
  return scripts.get(src);
}
function loadCss(href) {
  if (document.querySelector(`link[href="${href}"]`)) return;
  const l = document.createElement('link');
  l.rel = 'stylesheet';
  l.href = href;
  document.head.append(l);
}

async function openTerminal(page) {
  const status = $('term-status');
  $('term-reconnect').hidden = true;
  const m = app.sessions.get(page.id);
  if (m && (ENDED.has(m.state) || m.state === 'spawning')) {
    status.textContent = m.state === 'spawning' ? '(waiting for the agent)' : '(no runtime: the session ended)';
    return;
  }
  loadCss('/assets/vendor/xterm.css');
  await loadScript('/assets/vendor/xterm.js');
  await loadScript('/assets/vendor/addon-fit.js');
  if (app.page !== page || page.closed) return;
  if (!page.term) {
    const term = new window.Terminal({ convertEol: false, cursorBlink: true, fontSize: 13, scrollback: 5000 });
    const fit = new window.FitAddon.FitAddon();
    term.loadAddon(fit);
    term.open($('terminal'));
    fit.fit();
    page.term = term;
    page.fit = fit;
    page.onResize = () => fit.fit();
    window.addEventListener('resize', page.onResize);
    const enc = new TextEncoder();
    term.onData((data) => {
      if (page.termSocket && page.termSocket.readyState === WebSocket.OPEN) page.termSocket.send(enc.encode(data));
    });
    term.onResize(({ cols, rows }) => {
      if (page.termSocket && page.termSocket.readyState === WebSocket.OPEN) page.termSocket.send(JSON.stringify({ type: 'resize', cols, rows }));
    });
  }
  const term = page.term;
  const ws = new WebSocket(wsUrl(`/api/v1/sessions/${encodeURIComponent(page.id)}/terminal`, { cols: term.cols, rows: term.rows }));
  ws.binaryType = 'arraybuffer';
  page.termSocket = ws;
  status.textContent = '(connecting)';
  ws.onopen = () => {
    status.textContent = '(attached)';
    ws.send(JSON.stringify({ type: 'resize', cols: term.cols, rows: term.rows }));
  };
  ws.onmessage = (msg) => {
    if (typeof msg.data === 'string') {
      try {
        const c = JSON.parse(msg.data);
        if (c.type === 'exit') term.write(`\r\n\x1b[33m[${c.reason}]\x1b[0m\r\n`);
      } catch { term.write(msg.data); }
    } else {
      term.write(new Uint8Array(msg.data));
    }
  };
  ws.onclose = () => {
    if (page.termSocket === ws) page.termSocket = null;
    if (app.page !== page) return;
    status.textContent = '(detached)';
    $('term-reconnect').hidden = false;
  };
}
$('term-reconnect').addEventListener('click', () => { if (app.page) openTerminal(app.page); });

// ---- conversations ------------------------------------------------------------------------------

function scheduleConversations() {
  if (app.view !== 'conversations' || app.convTimer) return;
  app.convTimer = setTimeout(() => { app.convTimer = 0; loadConversations(); }, 500);
}

// Where a conversation stands: running its turn, waiting at a place in line, or idle.
function standing(c) {
  const more = (c.pending || 0) - (c.running || c.queue_position ? 1 : 0);
  const extra = more > 0 ? ` (+${more} queued)` : '';
  if (c.running) return `running${extra}`;
  if (c.queue_position) return `#${c.queue_position} in line${extra}`;
  return c.pending ? `${c.pending} queued` : 'idle';
}

async function loadConversations() {
  let list;
  try {
    list = (await api('GET', '/api/v1/conversations')).conversations;
  } catch (err) {
    if (!(err instanceof AuthError)) $('conversations-empty').textContent = err.message;
    $('conversations-empty').hidden = false;
    return;
  }
  $('conversations-empty').hidden = list.length > 0;
  $('conversations-body').innerHTML = list.map((c) => {
    const m = c.last_message;
    const last = m ? `${m.author}: ${firstLine(m.body, 120)}` : '—';
    return `<tr data-id="${esc(c.id)}"><td>${esc(c.thread)}</td><td>${esc(c.platform)}</td>
      <td>${esc(c.codebase || c.cwd || '—')}</td><td class="queue">${esc(standing(c))}</td>
      <td class="last" title="${esc(m ? m.status : '')}">${esc(last)}</td>
      <td><time data-at="${esc(c.updated_at)}">${age(c.updated_at)}</time> ago</td></tr>`;
  }).join('');
}

// ---- go -------------------------------------------------------------------------------------------

buildBoard();
start();
