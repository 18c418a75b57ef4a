// The kms-broker console: a client of the admin API like the CLI. It keeps the pasted token in
// sessionStorage (gone with the tab), sends it as a bearer token on every call, and shows the
// API's own refusals (401, 403, 412) as they come. Everything is built with DOM calls and
// textContent, never HTML strings, so nothing the API returns can become markup.
// @ts-check

import { ApiError, TOKEN_KEY, api, byId, el, fillPairs, say, svg, when } from './console-dom.js';

// The shapes of the admin API's answers the console reads (docs/admin-api.md, /openapi.json).
/** @typedef {{ name: string, role: 'viewer' | 'admin' }} Caller */
/** @typedef {{ keyId: string, healthz: string, degraded: string[], underReplicatedKeyIds: string[], uptimeSeconds: number, version: string }} Status */
/** @typedef {{ name: string, type: string, healthy: boolean, breaker: string, reason?: string, lastProbeMs?: number, writeOnly?: true }} Backend */
/** @typedef {{ version: string, role: string, createdAt: string, lastDecryptAt?: string, decryptCount: number }} Version */
/** @typedef {{ backend: string, version: string, stage: string, neededBy?: { objects: number, resources: Record<string, number> } }} Judgement */
/** @typedef {{ keyId: string, stage: string, versions: Judgement[], lastScan?: { scannedAt: string, objects: number } }} Rotation */
/** @typedef {{ order: string[], wrap: string }} Failover */
/** @typedef {{ at: string, healthy: boolean, breaker: string, probeMs?: number, reason?: string }} Sample */
/** @typedef {{ limit: number, backends: Record<string, Sample[]> }} HealthHistory */

const POLL_MS = 2000;

// ---------------------------------------------------------------------------------------------
// Session: sign in with whoami, poll while signed in

/** @type {Caller | undefined} */
let caller;
/** @type {ReturnType<typeof setTimeout> | undefined} */
let pollTimer;

async function signIn() {
  try {
    caller = /** @type {{ body: Caller }} */ (await api('/v1/whoami')).body;
  } catch (error) {
    signOut();
    say(error instanceof Error ? error.message : String(error));
    return;
  }
  if (caller === undefined) return;
  byId('message').hidden = true;
  byId('login').hidden = true;
  byId('session').hidden = false;
  byId('who').textContent = `${caller.name} (${caller.role})`;
  byId('panels').hidden = false;
  await poll();
}

function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  caller = undefined;
  clearTimeout(pollTimer);
  failover = { draft: undefined, base: undefined };
  byId('panels').hidden = true;
  byId('session').hidden = true;
  byId('login').hidden = false;
}

async function poll() {
  clearTimeout(pollTimer);
  try {
    const [status, backends, history, keys, usage, rotation, failoverNow] = await Promise.all([
      /** @type {Promise<{ body: Status }>} */ (api('/v1/status')),
      /** @type {Promise<{ body: { backends: Backend[] } }>} */ (api('/v1/backends')),
      /** @type {Promise<{ body: HealthHistory }>} */ (api('/v1/backends/history')),
      /** @type {Promise<{ body: { backends: Record<string, Version[]> } }>} */ (api('/v1/keys')),
      /** @type {Promise<{ body: { versions: Judgement[] } }>} */ (api('/v1/usage')),
      /** @type {Promise<{ body: Rotation }>} */ (api('/v1/rotation')),
      /** @type {Promise<{ body: Failover, etag: string | null }>} */ (api('/v1/failover')),
    ]);
    renderStatus(status.body);
    renderBackends(backends.body.backends, history.body);
    renderKeys(keys.body.backends, usage.body.versions);
    renderRotation(rotation.body);
    if (failover.draft === undefined) failover.base = { ...failoverNow.body, etag: failoverNow.etag };
    renderFailover();
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      signOut();
      say(error.message);
      return;
    }
    say(`refreshing failed: ${error instanceof Error ? error.message : String(error)}`);
  }
  if (caller !== undefined) pollTimer = setTimeout(() => void poll(), POLL_MS);
}

// ---------------------------------------------------------------------------------------------
// Panels

/** @param {Status} status */
function renderStatus(status) {
  const health = el('span', { class: status.healthz === 'ok' ? 'ok' : 'bad' }, status.healthz);
  fillPairs(byId('status'), [
    ['key_id', el('code', {}, status.keyId)],
    ['healthz', health],
    ['degraded', status.degraded.length === 0 ? 'none' : status.degraded.join(', ')],
    ['broker', `${status.version}, up ${Math.round(status.uptimeSeconds)} s`],
  ]);
  const seeds = status.underReplicatedKeyIds;
  byId('thin-seeds').replaceChildren(
    ...(seeds.length === 0
      ? [el('li', { class: 'ok' }, 'none: every seed carries every backend’s wrap')]
      : seeds.map(keyId => el('li', { class: 'warn' }, el('code', {}, keyId)))),
  );
}

/** @param {Backend[]} backends @param {HealthHistory} history */
function renderBackends(backends, history) {
  const rows = backends.map(backend => {
    const samples = history.backends[backend.name] ?? [];
    const health = backend.healthy ? 'healthy' : `down: ${backend.reason ?? 'unknown'}`;
    return el(
      'tr',
      { 'data-backend': backend.name },
      el('td', {}, backend.name),
      el('td', {}, backend.type + (backend.writeOnly === true ? ' (write-only)' : '')),
      el('td', { class: backend.healthy ? 'ok' : 'bad' }, health),
      el('td', {}, backend.breaker),
      el('td', {}, backend.lastProbeMs === undefined ? '-' : `${backend.lastProbeMs.toFixed(1)} ms`),
      el('td', {}, strip(samples, history.limit)),
    );
  });
  /** @type {HTMLElement} */ (byId('backends').querySelector('tbody')).replaceChildren(...rows);
}

/**
 * The broker's health samples as a strip, oldest left: one bar per sample (closed, half-open,
 * open, down) under a line of probe times scaled to the slowest.
 * @param {Sample[]} samples @param {number} limit
 */
function strip(samples, limit) {
  const width = limit * 3;
  const chart = svg('svg', { class: 'history', width, height: 28, viewBox: `0 0 ${width} 28` });
  chart.append(svg('rect', { x: 0, y: 0, width, height: 28, class: 'slots' }));
  const slowest = Math.max(1, ...samples.map(sample => sample.probeMs ?? 0));
  const points = samples.map((sample, index) => {
    const state = sample.healthy ? sample.breaker : 'down';
    chart.append(svg('rect', { x: index * 3, y: 20, width: 3, height: 8, class: state }));
    return `${index * 3 + 1.5},${(17 - ((sample.probeMs ?? 0) / slowest) * 15).toFixed(1)}`;
  });
  chart.append(svg('polyline', { points: points.join(' ') }));
  const first = samples[0];
  const since = first === undefined ? '' : ` since ${when(first.at)}`;
  const down = samples.filter(sample => !sample.healthy).length;
  chart.append(svg('title', {}));
  /** @type {Element} */ (chart.lastChild).textContent =
    `${samples.length} samples${since}, ${down} of them down`;
  return chart;
}

/** @param {Record<string, Version[]>} keys @param {Judgement[]} judgements */
function renderKeys(keys, judgements) {
  const rows = Object.entries(keys).flatMap(([backend, versions]) =>
    versions.map(version => {
      const verdict = judgements.find(item => item.backend === backend && item.version === version.version);
      return el(
        'tr',
        {},
        el('td', {}, backend),
        el('td', {}, version.version),
        el('td', {}, version.role),
        el('td', {}, when(version.createdAt)),
        el('td', {}, when(version.lastDecryptAt)),
        el('td', {}, String(version.decryptCount)),
        el('td', {}, neededBy(verdict)),
      );
    }),
  );
  /** @type {HTMLElement} */ (byId('keys').querySelector('tbody')).replaceChildren(...rows);
}

/** Retirement stages (docs/admin-api.md, GET /v1/usage) in words. */
const STAGES = /** @type {Record<string, string>} */ ({
  write: 'new seeds (the write version)',
  're-seeding': 'apiservers may still write under it',
  'awaiting-scan': 'unknown until a usage scan (kms-broker usage)',
  unclear: 'unclear: the scan found undecodable values',
  retirable: 'nothing: retirable',
  retired: 'retired',
});

/** What still needs a version, by the newest usage scan. @param {Judgement | undefined} verdict */
function neededBy(verdict) {
  if (verdict === undefined) return '-';
  if (verdict.neededBy === undefined) return STAGES[verdict.stage] ?? verdict.stage;
  const resources = Object.entries(verdict.neededBy.resources).map(([name, count]) => `${name} ${count}`);
  return `${verdict.stage}: ${verdict.neededBy.objects} objects (${resources.join(', ')})`;
}

/** @param {Rotation} rotation */
function renderRotation(rotation) {
  const versions = rotation.versions.map(item => `${item.backend} ${item.version}: ${item.stage}`);
  const scan = rotation.lastScan;
  fillPairs(byId('rotation'), [
    ['stage', el('span', { class: rotation.stage === 'steady' ? 'ok' : 'warn' }, rotation.stage)],
    ['old versions', versions.length === 0 ? 'none' : versions.join('; ')],
    ['last usage scan', scan === undefined ? 'none' : `${when(scan.scannedAt)}, ${scan.objects} objects`],
  ]);
}

// ---------------------------------------------------------------------------------------------
// Failover: an admin edits a draft and applies it with If-Match; a viewer sees it read-only

/** @type {{ base: (Failover & { etag: string | null }) | undefined, draft: Failover | undefined }} */
let failover = { base: undefined, draft: undefined };

function renderFailover() {
  const shown = failover.draft ?? failover.base;
  if (shown === undefined) return;
  const locked = caller?.role !== 'admin';
  const items = shown.order.map((name, index) => {
    const up = el('button', { type: 'button', 'aria-label': `move ${name} up` }, '↑');
    const down = el('button', { type: 'button', 'aria-label': `move ${name} down` }, '↓');
    up.addEventListener('click', () => move(index, -1));
    down.addEventListener('click', () => move(index, 1));
    const item = el('li', { 'data-backend': name }, el('span', {}, name), up, down);
    for (const button of [up, down]) /** @type {HTMLButtonElement} */ (button).disabled = locked;
    return item;
  });
  byId('failover-order').replaceChildren(...items);
  const wrap = /** @type {HTMLSelectElement} */ (byId('failover-wrap'));
  wrap.value = shown.wrap;
  for (const id of ['failover-wrap', 'failover-apply', 'failover-reset'])
    /** @type {HTMLButtonElement} */ (byId(id)).disabled = locked;
  byId('failover-note').textContent = locked
    ? 'Read only: changing the order needs an admin token.'
    : failover.draft === undefined
      ? 'Reorder, then Apply. The change persists and may change key_id.'
      : 'Not applied yet.';
}

/** @param {number} index @param {number} step */
function move(index, step) {
  const current = failover.draft ?? failover.base;
  if (current === undefined) return;
  const order = [...current.order];
  const target = index + step;
  if (target < 0 || target >= order.length) return;
  [order[index], order[target]] = [
    /** @type {string} */ (order[target]),
    /** @type {string} */ (order[index]),
  ];
  failover.draft = { order, wrap: current.wrap };
  renderFailover();
}

async function applyFailover() {
  const base = failover.base;
  const wrap = /** @type {HTMLSelectElement} */ (byId('failover-wrap')).value;
  const order = (failover.draft ?? base)?.order;
  if (base === undefined || order === undefined) return;
  try {
    const { body } = /** @type {{ body: Failover & { keyId: string } }} */ (
      await api('/v1/failover', {
        method: 'PUT',
        headers: { 'content-type': 'application/json', 'if-match': base.etag ?? '' },
        body: JSON.stringify({ order, wrap }),
      })
    );
    failover.draft = undefined;
    say(`failover order is now ${body.order.join(', ')} (wrap: ${body.wrap}); key_id ${body.keyId}`, 'info');
  } catch (error) {
    say(`failover not changed: ${error instanceof Error ? error.message : String(error)}`);
    // A refusal (403, 412: the order moved on meanwhile, 400) will not pass on a retry: show
    // the order as it is now. A failure (5xx, no answer) keeps the draft to apply again.
    if (error instanceof ApiError && error.status < 500) failover.draft = undefined;
  }
  await poll();
}

// ---------------------------------------------------------------------------------------------
// Wiring

byId('login').addEventListener('submit', event => {
  event.preventDefault();
  const input = /** @type {HTMLInputElement} */ (byId('token'));
  const token = input.value.trim();
  input.value = '';
  if (token === '') sessionStorage.removeItem(TOKEN_KEY);
  else sessionStorage.setItem(TOKEN_KEY, token);
  void signIn();
});
byId('logout').addEventListener('click', () => {
  signOut();
  say('signed out', 'info');
});
byId('failover-wrap').addEventListener('change', event => {
  const current = failover.draft ?? failover.base;
  const wrap = /** @type {HTMLSelectElement} */ (event.target).value;
  if (current !== undefined) failover.draft = { order: [...current.order], wrap };
  renderFailover();
});
byId('failover-apply').addEventListener('click', () => void applyFailover());
byId('failover-reset').addEventListener('click', () => {
  failover.draft = undefined;
  void poll();
});
if (sessionStorage.getItem(TOKEN_KEY) !== null) void signIn();
