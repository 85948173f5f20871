// Playwright tests of the dashboard, in real headless Chromium, against a running Flotilla.
//
// Started by `tests/api/dashboard.rs` (`cargo test --test api dashboard`), which runs the real
// `flotilla serve` with the scripted echo agent (it prints its prompt, then `READY`, then
// `got: <line>` for each line it reads) and passes:
//   FLOTILLA_URL        base URL of the service
//   FLOTILLA_TOKEN      its API token
//   FLOTILLA_ARTIFACTS  where screenshots go (test-artifacts/)
//   CHROMIUM            the browser (default /usr/bin/chromium, Debian's package)
//   FLOTILLA_SEEDED     how many ended sessions (seed-1…) it stored before starting (1,000)
//
// Every wait has a deadline (Playwright's waitFor or `until` below); nothing sleeps a fixed time.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const BASE = process.env.FLOTILLA_URL;
const TOKEN = process.env.FLOTILLA_TOKEN;
const ARTIFACTS = process.env.FLOTILLA_ARTIFACTS || 'test-artifacts';
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const WAIT = 30_000;
// Ended sessions the Rust side wrote into the store before starting the server.
const SEEDED = Number(process.env.FLOTILLA_SEEDED || 0);

assert.ok(BASE && TOKEN, 'FLOTILLA_URL and FLOTILLA_TOKEN must be set (run through cargo test --test api dashboard)');
mkdirSync(ARTIFACTS, { recursive: true });

async function api(method, path, body, token = TOKEN) {
  const headers = { 'Content-Type': 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  const res = await fetch(BASE + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

async function spawn(body) {
  const r = await api('POST', '/api/v1/sessions', { project: 'demo', ...body });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  return r.body.id;
}

// Polls `f` until it returns a truthy value, up to `ms`; the failure names `what`.
async function until(what, f, ms = WAIT) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    last = await f();
    if (last) return last;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function waitState(id, state) {
  return until(`${id} to be ${state}`, async () => {
    const r = await api('GET', `/api/v1/sessions/${id}`);
    return r.body && r.body.state === state ? r.body : null;
  });
}

const card = (page, zone, id) => page.locator(`.column[data-zone="${zone}"] .card[data-id="${id}"]`);

let browser;
let context;
let page;

before(async () => {
  // A fresh temporary profile per launch (Playwright's own --user-data-dir); the flags keep
  // Chromium off the (closed) network.
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
});

after(async () => {
  if (browser) await browser.close();
});

// A page signed in with the token (set in localStorage before the app starts).
async function signedInPage() {
  const ctx = await browser.newContext({ viewport: { width: 1600, height: 1000 } });
  await ctx.addInitScript((t) => localStorage.setItem('flotilla.token', t), TOKEN);
  const p = await ctx.newPage();
  p.on('pageerror', (e) => console.error('page error:', e.message));
  await p.goto(BASE + '/');
  await p.locator('#view-board').waitFor({ state: 'visible', timeout: WAIT });
  await p.locator('#conn.ok').waitFor({ timeout: WAIT });
  return { ctx, p };
}

describe('dashboard', () => {
  const ids = {};

  test('without the token the API refuses and the page asks for it', async () => {
    for (const path of ['/api/v1/board', '/api/v1/sessions']) {
      const r = await api('GET', path, undefined, null);
      assert.equal(r.status, 401, path);
    }
    assert.equal((await api('GET', '/api/v1/board', undefined, 'wrong-token')).status, 401);
    // The page and its assets hold no data and need no token.
    const asset = await fetch(`${BASE}/assets/app.js`);
    assert.equal(asset.status, 200);

    const ctx = await browser.newContext();
    const p = await ctx.newPage();
    await p.goto(BASE + '/');
    await p.locator('#login').waitFor({ state: 'visible', timeout: WAIT });
    assert.equal(await p.locator('#view-board').isVisible(), false);

    await p.fill('#login-token', 'wrong-token');
    await p.click('#login-form button[type=submit]');
    await p.locator('#login-error', { hasText: 'refused' }).waitFor({ timeout: WAIT });
    assert.equal(await p.locator('#login').isVisible(), true);

    await p.fill('#login-token', TOKEN);
    await p.click('#login-form button[type=submit]');
    await p.locator('#view-board').waitFor({ state: 'visible', timeout: WAIT });
    await p.locator('#login').waitFor({ state: 'hidden', timeout: WAIT });
    assert.equal(await p.evaluate(() => localStorage.getItem('flotilla.token')), TOKEN);
    await ctx.close();
  });

  test('the board shows the spawned sessions in the right columns', async () => {
    ids.working = await spawn({ prompt: 'Keep working on the parser' });
    ids.errored = await spawn({ prompt: 'This agent fails', agent: 'failing' });
    ids.done = await spawn({ prompt: 'This agent finishes at once', agent: 'quick' });
    ids.killed = await spawn({ prompt: 'This one gets killed' });
    await waitState(ids.working, 'working');
    await waitState(ids.errored, 'errored');
    await waitState(ids.done, 'done');
    await waitState(ids.killed, 'working');
    assert.equal((await api('POST', `/api/v1/sessions/${ids.killed}/kill`)).status, 200);
    await waitState(ids.killed, 'killed');

    const { ctx, p } = await signedInPage();
    await card(p, 'working', ids.working).waitFor({ timeout: WAIT });
    await card(p, 'needs', ids.errored).waitFor({ timeout: WAIT });
    await card(p, 'done', ids.done).waitFor({ timeout: WAIT });
    await card(p, 'done', ids.killed).waitFor({ timeout: WAIT });
    const w = card(p, 'working', ids.working);
    assert.match(await w.innerText(), /Keep working on the parser/);
    assert.match(await w.innerText(), new RegExp(`session/${ids.working}`));
    assert.match(await w.innerText(), /scripted/);
    assert.match(await card(p, 'needs', ids.errored).innerText(), /errored/);

    // Filters: by state, then back to all.
    await p.selectOption('#filter-state', 'errored');
    await card(p, 'working', ids.working).waitFor({ state: 'hidden', timeout: WAIT });
    assert.equal(await card(p, 'needs', ids.errored).isVisible(), true);
    await p.selectOption('#filter-state', '');
    await card(p, 'working', ids.working).waitFor({ state: 'visible', timeout: WAIT });

    await p.screenshot({ path: join(ARTIFACTS, 'dashboard-board.png'), fullPage: true });
    await ctx.close();
  });

  test('the board stays usable with 1,000 sessions', async () => {
    const total = (await api('GET', '/api/v1/sessions')).body.sessions.length;
    assert.ok(total >= SEEDED && total >= 1000, `${total} sessions in the store`);
    const ctx = await browser.newContext({ viewport: { width: 1600, height: 1000 } });
    await ctx.addInitScript((t) => localStorage.setItem('flotilla.token', t), TOKEN);
    const p = await ctx.newPage();
    const t0 = Date.now();
    await p.goto(BASE + '/');
    await p.waitForFunction((n) => document.querySelectorAll('.card').length >= n, total, { timeout: WAIT });
    const loaded = Date.now() - t0;
    const counts = await p.$$eval('.column .count', (els) => els.map((e) => Number(e.textContent)));
    assert.equal(counts.reduce((a, b) => a + b, 0), total, `column counts ${counts}`);

    // Typing a filter narrows 1,000 cards to one.
    const t1 = Date.now();
    await p.fill('#filter-text', 'seed-999');
    await p.waitForFunction(() => [...document.querySelectorAll('.card')].filter((c) => !c.hidden).length === 1, null, { timeout: WAIT });
    const filtered = Date.now() - t1;
    await p.fill('#filter-text', '');
    await p.waitForFunction((n) => [...document.querySelectorAll('.card')].filter((c) => !c.hidden).length === n, total, { timeout: WAIT });

    // A change still shows at once with 1,000 cards on the page.
    const id = await spawn({ prompt: 'Among a thousand' });
    const t2 = Date.now();
    await card(p, 'working', id).waitFor({ timeout: WAIT });
    const live = Date.now() - t2;
    console.log(`# board with ${total} sessions: rendered in ${loaded} ms, filtered in ${filtered} ms, new card in ${live} ms`);
    assert.ok(loaded < 15_000, `rendering ${total} cards took ${loaded} ms`);
    await ctx.close();
  });

  test('a state change appears without a reload', async () => {
    const { ctx, p } = await signedInPage();
    await p.evaluate(() => { window.__sameDocument = true; });

    const id = await spawn({ prompt: 'Arrives while the page is open' });
    await card(p, 'working', id).waitFor({ timeout: WAIT });
    await (await api('POST', `/api/v1/sessions/${id}/kill`)).status;
    await card(p, 'done', id).waitFor({ timeout: WAIT });
    assert.match(await card(p, 'done', id).innerText(), /killed/);
    await card(p, 'working', id).waitFor({ state: 'detached', timeout: WAIT });

    assert.equal(await p.evaluate(() => window.__sameDocument), true, 'the page was not reloaded');
    await ctx.close();
  });

  test('after a dropped stream the page resumes from its last event and never re-lists', async () => {
    const ctx = await browser.newContext({ viewport: { width: 1600, height: 1000 } });
    await ctx.addInitScript((t) => localStorage.setItem('flotilla.token', t), TOKEN);
    // Every event socket goes through this route, so the test can cut it like a network drop.
    const sockets = [];
    await ctx.routeWebSocket(/\/api\/v1\/ws/, (ws) => {
      ws.connectToServer();
      sockets.push(ws);
    });
    const p = await ctx.newPage();
    const reads = [];
    p.on('request', (r) => reads.push(new URL(r.url()).pathname));
    await p.goto(BASE + '/');
    await p.locator('#conn.ok').waitFor({ timeout: WAIT });
    const firstAfter = Number(new URL(sockets[0].url()).searchParams.get('after'));

    const id = await spawn({ prompt: 'Survives a dropped stream' });
    await card(p, 'working', id).waitFor({ timeout: WAIT });
    await sockets[0].close();
    await p.locator('#conn.bad').waitFor({ timeout: WAIT });
    assert.equal((await api('POST', `/api/v1/sessions/${id}/kill`)).status, 200);
    await card(p, 'done', id).waitFor({ timeout: WAIT });
    await p.locator('#conn.ok').waitFor({ timeout: WAIT });

    assert.ok(sockets.length >= 2, 'the page reconnected');
    const resumedAfter = Number(new URL(sockets[1].url()).searchParams.get('after'));
    assert.ok(resumedAfter > firstAfter, `resumed after ${resumedAfter}, first cursor ${firstAfter}`);
    assert.equal(reads.filter((r) => r === '/api/v1/board').length, 1, 'one board read');
    assert.equal(reads.filter((r) => r === '/api/v1/sessions').length, 0, 'no list read');
    await ctx.close();
  });

  test('the spawn form creates a session that then appears', async () => {
    const { ctx, p } = await signedInPage();
    await p.click('#spawn-open');
    await p.locator('#spawn-dialog').waitFor({ state: 'visible', timeout: WAIT });
    await p.selectOption('#spawn-project', 'demo');
    await p.fill('#spawn-prompt', 'Spawned from the dashboard form');
    await p.click('#spawn-submit');
    await p.locator('#spawn-dialog').waitFor({ state: 'hidden', timeout: WAIT });

    const c = p.locator('.column[data-zone="working"] .card', { hasText: 'Spawned from the dashboard form' });
    await c.waitFor({ timeout: WAIT });
    const id = await c.getAttribute('data-id');
    const r = await api('GET', `/api/v1/sessions/${id}`);
    assert.equal(r.status, 200);
    assert.equal(r.body.prompt, 'Spawned from the dashboard form');
    await waitState(id, 'working');
    await card(p, 'working', id).locator('.branch', { hasText: `session/${id}` }).waitFor({ timeout: WAIT });
    await ctx.close();
  });

  test('the session page sends a message, kills and restores', async () => {
    const id = await spawn({ prompt: 'Driven from its page' });
    await waitState(id, 'working');
    const { ctx, p } = await signedInPage();
    await p.goto(`${BASE}/#/s/${id}`);
    await p.locator('#view-session').waitFor({ state: 'visible', timeout: WAIT });
    await p.locator('#term-status', { hasText: 'attached' }).waitFor({ timeout: WAIT });
    await p.fill('#send-text', 'from the send form');
    await p.click('#send-form button[type=submit]');
    await p.locator('#act-status', { hasText: 'delivered' }).waitFor({ timeout: WAIT });
    await p.locator('#terminal .xterm-rows', { hasText: 'got: from the send form' }).waitFor({ timeout: WAIT });

    p.once('dialog', (d) => d.accept());
    await p.click('#act-kill');
    await p.locator('#session-head .state', { hasText: 'killed' }).waitFor({ timeout: WAIT });
    await waitState(id, 'killed');
    await p.click('#act-restore');
    await p.locator('#session-head .state', { hasText: 'working' }).waitFor({ timeout: WAIT });
    await p.click('#act-merge');
    await p.locator('#act-status.error').waitFor({ timeout: WAIT });
    await p.locator('#timeline li', { hasText: 'session.restore_requested' }).waitFor({ timeout: WAIT });
    await ctx.close();
  });

  test('the conversations page lists the chat conversations', async () => {
    const { ctx, p } = await signedInPage();
    await p.click('a[data-nav="conversations"]');
    await p.locator('#view-conversations').waitFor({ state: 'visible', timeout: WAIT });
    const row = p.locator('#conversations-body tr[data-id="telegram:chat-42"]');
    await row.waitFor({ timeout: WAIT });
    assert.match(await row.innerText(), /telegram/);
    // Its newest message, first line only, with its author.
    await row.locator('td.last', { hasText: 'ada: please fix the login page' }).waitFor({ timeout: WAIT });
    assert.doesNotMatch(await row.locator('td.last').innerText(), /500s/);
    assert.match(await row.locator('td.queue').innerText(), /^(running|idle|#\d+ in line|\d+ queued)/);
    await p.click('a[data-nav="board"]');
    await p.locator('#view-board').waitFor({ state: 'visible', timeout: WAIT });
    await ctx.close();
  });

  test('terminal attach shows the agent output and typed text reaches the pane', async () => {
    const id = ids.working;
    assert.ok(id, 'the board test spawned a working session');
    const { ctx, p } = await signedInPage();
    await p.click(`.card[data-id="${id}"] a.id`);
    await p.locator('#view-session').waitFor({ state: 'visible', timeout: WAIT });
    const rows = p.locator('#terminal .xterm-rows');
    // The echo agent printed its prompt and READY before we attached: the log's tail shows.
    await rows.filter({ hasText: 'READY' }).waitFor({ timeout: WAIT });
    await p.locator('#term-status', { hasText: 'attached' }).waitFor({ timeout: WAIT });

    await p.click('#terminal');
    await p.keyboard.type('hello from the browser');
    await p.keyboard.press('Enter');
    await rows.filter({ hasText: 'got: hello from the browser' }).waitFor({ timeout: WAIT });
    await until('the typed line in the agent output', async () => {
      const r = await api('GET', `/api/v1/sessions/${id}/output`);
      return r.body.output.includes('got: hello from the browser');
    });

    // The page also shows the timeline and the reactions table.
    await p.locator('#timeline li', { hasText: 'runtime.started' }).waitFor({ timeout: WAIT });
    await p.locator('#timeline li', { hasText: 'agent.message_sent' }).waitFor({ timeout: WAIT });
    await p.screenshot({ path: join(ARTIFACTS, 'dashboard-session.png'), fullPage: true });
    await ctx.close();
  });
});
