// The web console in a real browser (Debian's Chromium through playwright-core) against a real
// `kms-broker serve` with two SoftHSM tokens: the page is served with a strict CSP from the
// admin listener, signs in only with a token the API accepts, shows backends, keys, thin
// seeds, rotation and the failover order, lets an admin reorder it (and the broker's Status
// follows) and a viewer only look, and loads nothing from anywhere but the broker. Screenshots
// are kept under test-artifacts/console/ (git-ignored); their paths are printed.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import { CONSOLE_CSP } from '../../src/admin/console/routes.ts';
import { createKmsV2Client, type KmsV2Client } from '../../src/grpc/kms-v2-client.ts';
import { adminClient, problem, type AdminClient } from '../helpers/admin-http.ts';
import { startBrokerProcess, type BrokerProcess } from '../helpers/broker-process.ts';
import { until } from '../helpers/core-broker.ts';
import { artifactsDir, launchChromium, openPage, screenshot, type WatchedPage } from '../helpers/chromium.ts';
import { pkcs11Backend, writeConfig, type TestConfig } from '../helpers/config.ts';
import { addToken, createToken, type SoftHsmToken } from '../helpers/softhsm.ts';

const started = Date.now();

interface HistoryView {
  limit: number;
  backends: Record<string, { at: string; breaker: string; healthy: boolean }[]>;
}

/** Waits until the element shows text matching `text` (playwright's own polling, no sleeps). */
async function shows(page: Page, selector: string, text: RegExp): Promise<void> {
  await page.locator(selector, { hasText: text }).first().waitFor();
}

async function signIn(page: Page, token: string): Promise<void> {
  await page.locator('#token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
}

/** Every request the page sent went to the broker's own origin (no CDN, fonts or beacons). */
function assertOnlySameOrigin(watched: WatchedPage, origin: string): void {
  assert.ok(watched.requests.length > 0, 'the page sent requests');
  const outside = watched.requests.filter(request => new URL(request.split(' ')[1] ?? '').origin !== origin);
  assert.deepEqual(outside, [], 'requests to another origin');
}

/** Console lines other than the browser's report of the given refused API calls. */
function unexpected(watched: WatchedPage, refused: number[] = []): string[] {
  return watched.messages.filter(
    line =>
      !refused.some(status =>
        line.startsWith(`error: Failed to load resource: the server responded with a status of ${status}`),
      ),
  );
}

describe('web console in Chromium', () => {
  let token: SoftHsmToken;
  let config: TestConfig;
  let broker: BrokerProcess;
  let address: string;
  let admin: AdminClient;
  let kms: KmsV2Client;
  let browser: Browser;
  const artifacts = artifactsDir('console');

  before(async () => {
    browser = await launchChromium();
    token = createToken();
    const pin2 = randomBytes(8).toString('hex');
    addToken(token, 'kms2', pin2);
    writeFileSync(join(token.dir, 'pin2'), `${pin2}\n`, { mode: 0o600 });
    const base = writeConfig(token);
    config = writeConfig(
      token,
      {
        backends: [
          pkcs11Backend(token),
          pkcs11Backend(token, { name: 'hsm2', tokenLabel: 'kms2', pinFile: join(token.dir, 'pin2') }),
        ],
        failover: { order: ['hsm', 'hsm2'], wrap: 'first' },
        // The browser needs TCP: the loopback, on a port the kernel picks.
        admin: {
          ...(base.values.admin as Record<string, unknown>),
          listen: '127.0.0.1:0',
          console: { enabled: true },
        },
      },
      base.dir,
    );
    broker = await startBrokerProcess(config.path, token.env);
    address = (await broker.waitForLog(record => record.msg === 'admin API listening')).address as string;
    admin = adminClient(address);
    kms = createKmsV2Client(config.socket);
  });

  after(async () => {
    kms?.close();
    await browser?.close();
    if (broker !== undefined) assert.equal(await broker.stop(), 0, 'the broker exits 0 on SIGTERM');
    token?.remove();
    console.log(`console suite took ${((Date.now() - started) / 1000).toFixed(1)} s`);
  });

  it('serves its three files from memory with a strict CSP, nosniff and ETags, and nothing else', async () => {
    const page = await admin.get('/console/');
    assert.equal(page.status, 200);
    assert.equal(page.headers['content-type'], 'text/html; charset=utf-8');
    assert.equal(page.headers['content-security-policy'], CONSOLE_CSP);
    for (const directive of ["default-src 'self'", "frame-ancestors 'none'", "object-src 'none'"])
      assert.ok(CONSOLE_CSP.split('; ').includes(directive), directive);
    assert.doesNotMatch(CONSOLE_CSP, /unsafe|\*|https?:/, 'no inline code, no other origin');
    assert.equal(page.headers['x-content-type-options'], 'nosniff');
    assert.doesNotMatch(page.text, /<script>|<style>|style=|\son\w+=/, 'no inline script, style or handler');
    assert.doesNotMatch(page.text, /https?:|(?:src|href)="\/\//, 'no resource from another origin');
    let weight = Buffer.byteLength(page.text);
    for (const [file, type] of [
      ['console.js', 'text/javascript; charset=utf-8'],
      ['console-dom.js', 'text/javascript; charset=utf-8'],
      ['console.css', 'text/css; charset=utf-8'],
    ] as const) {
      const response = await admin.get(`/console/${file}`);
      assert.equal(response.status, 200, file);
      assert.equal(response.headers['content-type'], type);
      assert.equal(response.headers['content-security-policy'], CONSOLE_CSP);
      weight += Buffer.byteLength(response.text);
      assert.doesNotMatch(response.text, /@import|url\(|fetch\(['"`]https?:/, `${file} loads nothing else`);
      const etag = String(response.headers.etag);
      const again = await admin.request(`/console/${file}`, { headers: { 'if-none-match': etag } });
      assert.equal(again.status, 304, `${file} revalidates by ETag`);
      assert.equal(again.text, '');
    }
    console.log(`console page weight: ${weight} bytes (HTML + JS + CSS)`);
    assert.equal((await admin.get('/console')).headers.location, '/console/');
    for (const path of [
      '/console/routes.ts',
      '/console/..%2froutes.ts',
      '/console/%2e%2e%2fserver.ts',
      '/console/../server.ts',
      '/console/tsconfig.json',
    ]) {
      problem(await admin.get(path), 404, 'NOT_FOUND');
    }
    const openapi = (await admin.get('/openapi.json')).body as { paths: Record<string, unknown> };
    assert.ok(!Object.keys(openapi.paths).some(path => path.startsWith('/console')), 'not in the API');
    assert.ok('/v1/whoami' in openapi.paths);
    assert.ok('/v1/backends/history' in openapi.paths, 'the console’s health history is an API route');
  });

  it('keeps a health history per backend for viewers, sampled at each probe', async () => {
    problem(await admin.get('/v1/backends/history'), 401, 'UNAUTHORIZED');
    // The test config probes every 500 ms: ask (bounded: 20 s) until each backend has 3 samples.
    const history = await until(
      async () => (await admin.get('/v1/backends/history', config.viewerToken)).body as HistoryView,
      view => ['hsm', 'hsm2'].every(name => (view.backends[name]?.length ?? 0) >= 3),
      'three health samples per backend',
      { attempts: 200, intervalMs: 100 },
    );
    assert.equal(history.limit, 120);
    for (const samples of Object.values(history.backends)) {
      const times = samples.map(sample => Date.parse(sample.at));
      assert.deepEqual(
        [...times].sort((a, b) => a - b),
        times,
        'oldest first',
      );
      assert.equal(new Set(times).size, times.length, 'one sample per probe');
      assert.ok(samples.every(sample => sample.healthy && sample.breaker === 'closed'));
    }
  });

  it('shows the API’s 401 and loads nothing else without a token or with a wrong one', async () => {
    const watched = await openPage(browser);
    try {
      const { page } = watched;
      const response = await page.goto(`${address}/console/`);
      assert.equal(response?.headers()['content-security-policy'], CONSOLE_CSP);
      await signIn(page, '');
      await shows(page, '#message', /401 UNAUTHORIZED: send Authorization: Bearer <token>/);
      assert.equal(await page.locator('#panels').isHidden(), true);
      await signIn(page, randomBytes(24).toString('base64url'));
      await shows(page, '#message', /401 UNAUTHORIZED: the token is not one of the configured admin tokens/);
      assert.equal(await page.locator('#panels').isHidden(), true);
      assert.equal(await page.evaluate(() => sessionStorage.length), 0, 'a refused token is not kept');
      assert.equal(page.url(), `${address}/console/`, 'the token never reaches the URL');
      await screenshot(page, artifacts, 'login-refused');
      const apiCalls = watched.requests.filter(request => request.includes('/v1/'));
      assert.deepEqual(apiCalls, [`GET ${address}/v1/whoami`, `GET ${address}/v1/whoami`]);
      assertOnlySameOrigin(watched, address);
      assert.deepEqual(unexpected(watched, [401]), []);
      assert.deepEqual(watched.errors, []);
    } finally {
      await watched.close();
    }
  });

  it('lets a viewer see backends, keys and the failover order but not reorder it (403)', async () => {
    const watched = await openPage(browser);
    try {
      const { page } = watched;
      await page.goto(`${address}/console/`);
      await signIn(page, config.viewerToken);
      await shows(page, '#who', /dashboards \(viewer\)/);
      for (const name of ['hsm', 'hsm2'])
        await shows(page, `#backends tr[data-backend="${name}"]`, /pkcs11.*healthy.*closed/);
      await shows(page, '#keys tbody tr', /hsm2.*1.*write/);
      await shows(page, '#thin-seeds', /none/);
      await shows(page, '#rotation', /steady/);
      // The broker's health history, drawn as a strip, grows with each probe.
      await page
        .locator('#backends tr[data-backend="hsm"] svg title', {
          hasText: /^([3-9]|\d\d+) samples since .*, 0 of them down$/,
        })
        .waitFor({ state: 'attached' });
      assert.ok((await page.locator('#backends tr[data-backend="hsm"] svg rect.closed').count()) >= 3);
      assert.deepEqual(await page.locator('#failover-order li').allTextContents(), ['hsm↑↓', 'hsm2↑↓']);
      for (const control of ['#failover-apply', '#failover-wrap', '[aria-label="move hsm2 up"]'])
        assert.equal(await page.locator(control).isDisabled(), true, `${control} is disabled for a viewer`);
      await screenshot(page, artifacts, 'viewer');

      // Forced anyway (as from the developer tools): the API refuses, and the page says so.
      // In one task, so no poll re-renders (and re-disables) the controls in between. A
      // string: this file is type-checked without the DOM's types.
      await page.evaluate(`(() => {
        for (const selector of ['[aria-label="move hsm2 up"]', '#failover-apply']) {
          const control = document.querySelector(selector);
          control.disabled = false;
          control.click();
        }
      })()`);
      await shows(
        page,
        '#message',
        /failover not changed: 403 FORBIDDEN: token dashboards has the viewer role/,
      );
      // The page drops the refused draft and shows the order as it is.
      await shows(page, '#failover-order li:first-child', /^hsm↑↓$/);
      await screenshot(page, artifacts, 'viewer-forced-403');
      const setting = (await admin.get('/v1/failover', config.viewerToken)).body as { order: string[] };
      assert.deepEqual(setting.order, ['hsm', 'hsm2'], 'nothing changed');
      assert.deepEqual(unexpected(watched, [403]), []);
      assertOnlySameOrigin(watched, address);
      assert.deepEqual(watched.errors, []);
    } finally {
      await watched.close();
    }
  });

  it('lets an admin put hsm2 first; Status follows with a new key_id; a rotation shows in progress', async () => {
    const before = await kms.status();
    const watched = await openPage(browser);
    try {
      const { page } = watched;
      await page.goto(`${address}/console/`);
      await signIn(page, config.adminToken);
      await shows(page, '#who', /ops \(admin\)/);
      await shows(page, '#status', new RegExp(before.key_id));
      await page.locator('[aria-label="move hsm2 up"]').click();
      assert.deepEqual(await page.locator('#failover-order li').allTextContents(), ['hsm2↑↓', 'hsm↑↓']);
      await page.locator('#failover-apply').click();
      await shows(page, '#message', /failover order is now hsm2, hsm \(wrap: first\); key_id kbr1-/);

      const after = await kms.status();
      assert.notEqual(after.key_id, before.key_id, 'writes moved to hsm2: a new key_id');
      assert.equal(after.healthz, 'ok');
      const status = (await admin.get('/v1/status', config.viewerToken)).body as {
        keyId: string;
        failover: { order: string[] };
      };
      assert.equal(status.keyId, after.key_id, 'the admin API and the KMS Status agree');
      assert.deepEqual(status.failover.order, ['hsm2', 'hsm']);
      // The page shows the new key_id too, at its next poll.
      await shows(page, '#status', new RegExp(after.key_id));
      await screenshot(page, artifacts, 'admin-reordered');

      // A rotation in progress: the old write version stays needed until the apiservers
      // re-seed and a usage scan clears it; the page says which stage it is in.
      const rotated = await admin.post('/v1/backends/hsm2/rotate', config.adminToken);
      assert.equal(rotated.status, 200);
      await shows(page, '#rotation', /stage\s*re-seeding/);
      await shows(page, '#rotation', /hsm2 1: re-seeding/);
      await shows(page, '#keys tbody tr', /hsm2\s*2\s*write/);
      await shows(page, '#keys tbody tr', /hsm2\s*1\s*active.*apiservers may still write under it/);
      await screenshot(page, artifacts, 'rotation-in-progress');
      assert.deepEqual(watched.messages, [], 'no console messages, CSP reports included');
      assertOnlySameOrigin(watched, address);
      assert.deepEqual(watched.errors, []);
    } finally {
      await watched.close();
    }
  });
});
