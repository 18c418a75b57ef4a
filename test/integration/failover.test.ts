// Failover between a real SoftHSM token ('hsm') and a real raft-backed OpenBao Transit key
// ('vault') under faults. With `wrap: all` every seed is wrapped by both (the HSM's wrap in the
// ciphertext, Transit's in the annotation vault.wrap.kms-broker.io): when one side is killed,
// sealed or failing, reads go through the other, writes still succeed with the wraps that
// worked (under-replicated, counted and reported), and once the side is back for the
// hysteresis the broker heals the thin seed with exactly one key_id change. With both down,
// calls fail fast with UNAVAILABLE and Status names both; with `wrap: first`, a flapping
// backend moves writes away once and takes them back only after the hysteresis.
//
// OpenBao faults are real (SIGKILL, seal). The HSM cannot be unplugged from outside (SoftHSM is
// a library inside the broker), so its faults come from a switch around the real PKCS#11
// backend (test/helpers/fault-injection.ts) in an in-process broker.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it, type TestContext } from 'node:test';
import { status as GrpcStatus } from '@grpc/grpc-js';
import type { RunningApp } from '../../src/app.ts';
import { createKmsV2Client, type KmsV2Client } from '../../src/grpc/kms-v2-client.ts';
import { adminClient } from '../helpers/admin-http.ts';
import { startBrokerProcess, type LogRecord } from '../helpers/broker-process.ts';
import {
  adminBackend,
  adminStatus,
  decryptEachWrap,
  decryptOne,
  defer,
  encryptOne,
  encryptSome,
  INJECTED_CAUSE,
  logTime,
  pause,
  startFailoverApp,
  startTransitServer,
  underReplicatedTotal,
  until,
  VAULT_WRAP,
  wrapsOf,
  writeFailoverConfig,
  type LogEntry,
  type Sealed,
} from '../helpers/fault-injection.ts';
import { listenSilently } from '../helpers/test-scope.ts';
import { createToken, type SoftHsmToken } from '../helpers/softhsm.ts';

const HYSTERESIS_MS = 1000;
const PROBE_INTERVAL_MS = 200;
const CALL_MS = 2500;
/** The grpc client's deadline: beyond every broker budget, so a hang shows as one. */
const CLIENT_TIMEOUT_MS = 10000;
/** Log times have millisecond resolution and come from the same clock as the breaker's. */
const CLOCK_SLACK_MS = 5;

// ---------------------------------------------------------------------------------------------
// Traffic: a few workers doing real Encrypts and Decrypts until stopped (bounded in calls and time)

interface CallOutcome {
  readonly op: 'encrypt' | 'decrypt';
  readonly startedAt: number;
  readonly ms: number;
  readonly error?: { readonly code: number | undefined; readonly details: string };
}

interface Traffic {
  readonly outcomes: readonly CallOutcome[];
  /** Every envelope an Encrypt returned, in order. */
  readonly written: readonly Sealed[];
  /** Resolves as soon as a finished call makes `predicate` hold; rejects if traffic ends first. */
  until(predicate: () => boolean, what: string, timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

function startTraffic(
  client: KmsV2Client,
  readable: readonly Sealed[],
  options: { workers?: number; maxCalls?: number; maxMs?: number } = {},
): Traffic {
  const maxCalls = options.maxCalls ?? 20000;
  const endAt = Date.now() + (options.maxMs ?? 60000);
  const outcomes: CallOutcome[] = [];
  const written: Sealed[] = [];
  const listeners = new Set<(ended: boolean) => void>();
  let stopped = false;
  let calls = 0;
  const notify = (ended: boolean) => {
    for (const listener of listeners) listener(ended);
  };
  const worker = async (index: number) => {
    for (let i = 0; !stopped && calls < maxCalls && Date.now() < endAt; i++) {
      calls++;
      const op = (i + index) % 2 === 0 ? 'encrypt' : 'decrypt';
      const startedAt = Date.now();
      const started = performance.now();
      try {
        if (op === 'encrypt') {
          written.push(await encryptOne(client));
        } else {
          const sealed = readable[(i * 7 + index) % readable.length];
          assert.ok(sealed);
          const plaintext = await decryptOne(client, sealed);
          if (!plaintext.equals(sealed.seed)) throw new WrongPlaintext();
        }
        outcomes.push({ op, startedAt, ms: performance.now() - started });
      } catch (error) {
        const { code, details } = error as { code?: number; details?: string };
        outcomes.push({
          op,
          startedAt,
          ms: performance.now() - started,
          error: { code, details: details ?? String(error) },
        });
      }
      notify(false);
    }
  };
  const done = Promise.all(Array.from({ length: options.workers ?? 4 }, (_, index) => worker(index))).then(
    () => notify(true),
  );
  return {
    outcomes,
    written,
    until(predicate, what, timeoutMs = 15000) {
      return new Promise<void>((resolve, reject) => {
        const timer = setTimeout(
          () => finish(new Error(`traffic: ${what} not seen within ${timeoutMs} ms`)),
          timeoutMs,
        );
        const finish = (error?: Error) => {
          clearTimeout(timer);
          listeners.delete(check);
          if (error === undefined) resolve();
          else reject(error);
        };
        const check = (ended: boolean) => {
          if (predicate()) finish();
          else if (ended) finish(new Error(`traffic ended before ${what}`));
        };
        listeners.add(check);
        check(stopped);
      });
    },
    async stop() {
      stopped = true;
      await done;
    },
  };
}

function failuresOf(traffic: Traffic): CallOutcome[] {
  return traffic.outcomes.filter(outcome => outcome.error !== undefined);
}

const isVault = (msg: string) => (record: LogRecord) => record.msg === msg && record.backend === 'vault';

/** Bounded loop of Status calls for `ms`: the key_id must stay `keyId` the whole time. */
async function keyIdStaysFor(client: KmsV2Client, keyId: string, ms: number): Promise<void> {
  const endAt = Date.now() + ms;
  for (let attempt = 0; attempt < 1000 && Date.now() < endAt; attempt++) {
    assert.equal((await client.status()).key_id, keyId, 'the key_id changed again');
    await pause(20);
  }
}

async function decryptAll(client: KmsV2Client, items: readonly Sealed[], label: string): Promise<void> {
  const plaintexts = await Promise.all(items.map(item => decryptOne(client, item)));
  plaintexts.forEach((plaintext, i) =>
    assert.deepEqual(plaintext, items[i]?.seed, `${label}: envelope ${i}`),
  );
}

describe('failover between an HSM and OpenBao Transit', () => {
  let hsmToken: SoftHsmToken;

  before(() => {
    hsmToken = createToken();
    // For the in-process brokers; broker processes get it in their environment.
    process.env.SOFTHSM2_CONF = hsmToken.conf;
  });

  after(() => hsmToken.remove());

  /**
   * One OpenBao outage under a broker process with wrap: all, while traffic flows: `down` takes
   * OpenBao away, `up` brings it back. Reads and writes never fail; writes are under-replicated
   * while it is down; once it is back the breaker closes and, after the hysteresis, the key_id
   * changes exactly once, to a seed that carries both wraps again.
   */
  async function vaultOutage(
    t: TestContext,
    mode: 'killed' | 'sealed',
    down: (server: Awaited<ReturnType<typeof startTransitServer>>) => Promise<void>,
    up: (server: Awaited<ReturnType<typeof startTransitServer>>) => Promise<void>,
  ): Promise<void> {
    const server = await startTransitServer(t);
    const config = await writeFailoverConfig(t, hsmToken, server, { keyLabel: `kek-${mode}` });
    const broker = await startBrokerProcess(config.path, { ...server.env, SOFTHSM2_CONF: hsmToken.conf });
    defer(t, () => broker.stop());
    const client = createKmsV2Client(config.socket, CLIENT_TIMEOUT_MS);
    defer(t, () => client.close());
    const admin = adminClient(config.adminSocket);
    const pid = broker.child.pid;

    const written = await encryptSome(client, 20);
    for (const sealed of written) assert.deepEqual(wrapsOf(sealed), ['hsm', 'vault']);
    const keyId = (await client.status()).key_id;
    assert.ok(written.every(sealed => sealed.keyId === keyId));
    assert.equal(await underReplicatedTotal(admin), 0);

    // Mid-traffic: OpenBao goes while calls are in flight.
    const traffic = startTraffic(client, written);
    defer(t, () => traffic.stop());
    await traffic.until(() => traffic.outcomes.length >= 20, 'traffic before the fault');
    const downMark = broker.logs.length;
    await down(server);
    await broker.waitForLog(
      record => broker.logs.indexOf(record) >= downMark && isVault('backend unhealthy')(record),
    );
    const thin = () => traffic.written.filter(sealed => sealed.annotations[VAULT_WRAP] === undefined);
    await traffic.until(() => thin().length >= 20, '20 under-replicated writes');
    await traffic.stop();

    const failures = failuresOf(traffic);
    assert.deepEqual(failures, [], 'no Encrypt or Decrypt failed while only OpenBao was down');
    const decrypts = traffic.outcomes.filter(outcome => outcome.op === 'decrypt').length;
    t.diagnostic(
      `${mode}: ${traffic.outcomes.length} calls (${decrypts} decrypts), ${thin().length} under-replicated writes`,
    );
    for (const sealed of traffic.written) {
      assert.equal(sealed.keyId, keyId, 'the key_id does not change while OpenBao is down');
      const wraps = wrapsOf(sealed);
      assert.ok(
        isDeep(wraps, ['hsm', 'vault']) || isDeep(wraps, ['hsm']),
        `unexpected wraps ${wraps.join(',')}`,
      );
    }
    // Every thin write was counted, and nothing else.
    assert.equal(await underReplicatedTotal(admin), thin().length);
    // Still down: every envelope, old and thin, reads through the HSM.
    await decryptAll(client, written, 'before the fault, read while down');
    await decryptAll(client, thin(), 'thin, read while down');
    const thinNow = await encryptOne(client);
    assert.deepEqual(wrapsOf(thinNow), ['hsm'], 'a write while down carries the HSM wrap only');

    // Status stays ok by design (writes succeed); the admin API says what is wrong.
    const grpcStatus = await client.status();
    assert.equal(grpcStatus.healthz, 'ok');
    assert.equal(grpcStatus.key_id, keyId);
    const status = await until(
      () => adminStatus(admin, config.viewerToken),
      body => body.degraded.includes('vault'),
      'admin status lists vault as degraded',
    );
    assert.deepEqual(status.degraded, ['vault']);
    assert.equal(status.healthz, 'ok');
    assert.deepEqual(status.underReplicatedKeyIds, [keyId]);
    assert.notEqual((await adminBackend(admin, config.viewerToken, 'vault')).breaker, 'closed');
    assert.equal(
      broker.logs.slice(downMark).filter(record => record.msg === 'key set changed').length,
      0,
      'no heal while OpenBao is down',
    );

    // Back: the breaker closes, and after the hysteresis the thin seed is healed, once.
    const upMark = broker.logs.length;
    await up(server);
    const backend = await until(
      () => adminBackend(admin, config.viewerToken, 'vault'),
      body => body.breaker === 'closed',
      'vault breaker closed',
    );
    assert.equal(backend.healthy, true);
    const changed = await broker.waitForLog(
      record => broker.logs.indexOf(record) >= upMark && record.msg === 'key set changed',
    );
    const changedAt = broker.logs.indexOf(changed);
    const recovered = broker.logs.slice(upMark, changedAt).filter(isVault('backend recovered'));
    const lastRecovered = recovered.at(-1);
    assert.ok(lastRecovered, 'the breaker closed before the heal');
    const closedForMs = logTime(changed) - logTime(lastRecovered);
    t.diagnostic(`${mode}: healed ${closedForMs} ms after the vault breaker closed`);
    assert.ok(
      closedForMs >= HYSTERESIS_MS - CLOCK_SLACK_MS,
      `healed after ${closedForMs} ms, hysteresis ${HYSTERESIS_MS} ms`,
    );
    assert.equal(changed.previousKeyId, keyId);
    assert.match(String(changed.reason), /under-replicated/);
    const healedKeyId = String(changed.keyId);
    assert.notEqual(healedKeyId, keyId);

    const fresh = await encryptSome(client, 5);
    for (const sealed of fresh) {
      assert.equal(sealed.keyId, healedKeyId);
      assert.deepEqual(wrapsOf(sealed), ['hsm', 'vault'], 'new envelopes carry both wraps again');
      assert.deepEqual(await decryptEachWrap(client, sealed), ['hsm', 'vault']);
    }
    // Exactly one change: it stays for longer than another hysteresis would take.
    await keyIdStaysFor(client, healedKeyId, 2 * HYSTERESIS_MS);
    assert.equal(broker.logs.slice(upMark).filter(record => record.msg === 'key set changed').length, 1);
    await decryptAll(client, [...written, ...thin(), thinNow], 'everything, after recovery');
    const healthy = await adminStatus(admin, config.viewerToken);
    assert.deepEqual(healthy.degraded, []);
    assert.equal((await client.status()).healthz, 'ok');
    assert.equal(broker.child.exitCode, null, 'the broker never restarted');
    assert.equal(broker.child.pid, pid);
  }

  it('keeps reading and writing through the HSM while OpenBao is killed mid-traffic, and heals the thin seed once it is back', async t => {
    await vaultOutage(
      t,
      'killed',
      server => server.kill(),
      server => server.restart(),
    );
  });

  it('does the same while OpenBao is sealed, and recovers on unseal without a broker restart', async t => {
    await vaultOutage(
      t,
      'sealed',
      server => server.seal(),
      server => server.unseal(),
    );
  });

  it('reads through Transit and writes Transit-only envelopes while the HSM fails, then heals once', async t => {
    const server = await startTransitServer(t);
    const config = await writeFailoverConfig(t, hsmToken, server, { keyLabel: 'kek-hsm-fails' });
    const { app, hsm, log } = await startFailoverApp(t, config.path);
    const client = createKmsV2Client(config.socket, CLIENT_TIMEOUT_MS);
    defer(t, () => client.close());
    const admin = adminClient(config.adminSocket);

    const written = await encryptSome(client, 10);
    for (const sealed of written) assert.deepEqual(wrapsOf(sealed), ['hsm', 'vault']);
    const keyId = (await client.status()).key_id;

    // Fail just after a probe round: the next probe is a whole interval away, so the reads
    // below reach the failing HSM before any probe can open its breaker.
    const probedAt = lastProbeOf(app, 'hsm');
    await until(
      () => Promise.resolve(lastProbeOf(app, 'hsm')),
      at => at !== probedAt,
      'a fresh probe of the HSM',
      5 * PROBE_INTERVAL_MS,
    );
    const downMark = log.records.length;
    hsm.fail();
    // At once, before any probe has noticed: the HSM wrap fails and Transit's answers.
    await decryptAll(client, written, 'right after the HSM failed');
    await log.waitFor(
      record => record.msg === 'backend unhealthy' && record.backend === 'hsm',
      10000,
      downMark,
    );
    const readMark = log.records.length;
    await decryptAll(client, written, 'HSM breaker open');
    const reads = log.records
      .slice(readMark)
      .filter(record => record.msg === 'kms call' && record.op === 'decrypt');
    assert.equal(reads.length, written.length);
    assert.ok(
      reads.every(record => record.backend === 'vault'),
      'with the HSM breaker open, reads go to Transit',
    );

    const thin = await encryptSome(client, 10);
    for (const sealed of thin) {
      assert.deepEqual(wrapsOf(sealed), ['vault'], 'the ciphertext is the Transit wrap, no HSM annotation');
      assert.deepEqual(sealed.annotations, {});
      assert.equal(sealed.keyId, keyId);
    }
    await decryptAll(client, thin, 'Transit-only, while the HSM fails');
    assert.equal(await underReplicatedTotal(admin), thin.length);
    assert.equal((await client.status()).healthz, 'ok', 'writes succeed, so Status is ok');
    const status = await adminStatus(admin, config.viewerToken);
    assert.deepEqual(status.degraded, ['hsm']);
    assert.deepEqual(status.underReplicatedKeyIds, [keyId]);
    const injected = hsm.injected;
    t.diagnostic(`injected failures: ${JSON.stringify(injected)}`);
    // Reads really went to the failing HSM first, until its breaker opened.
    assert.ok((injected.unwrap ?? 0) >= 1);
    assert.equal(
      log.records.slice(downMark).filter(record => record.msg === 'key set changed').length,
      0,
      'no heal while the HSM fails',
    );

    const upMark = log.records.length;
    hsm.recover();
    const changed = await log.waitFor(record => record.msg === 'key set changed', 15000, upMark);
    const recovered = log.records
      .slice(upMark, log.records.indexOf(changed))
      .filter(record => record.msg === 'backend recovered' && record.backend === 'hsm');
    const lastRecovered = recovered.at(-1);
    assert.ok(lastRecovered, 'the HSM breaker closed before the heal');
    const closedForMs = logTime(changed) - logTime(lastRecovered);
    assert.ok(closedForMs >= HYSTERESIS_MS - CLOCK_SLACK_MS, `healed after ${closedForMs} ms`);
    const healedKeyId = String(changed.keyId);
    assert.notEqual(healedKeyId, keyId);
    const fresh = await encryptOne(client);
    assert.equal(fresh.keyId, healedKeyId);
    assert.deepEqual(await decryptEachWrap(client, fresh), ['hsm', 'vault']);
    await keyIdStaysFor(client, healedKeyId, 2 * HYSTERESIS_MS);
    assert.equal(log.records.slice(upMark).filter(record => record.msg === 'key set changed').length, 1);
    await decryptAll(client, [...written, ...thin], 'everything, after the HSM is back');
    assert.deepEqual((await adminStatus(admin, config.viewerToken)).degraded, []);
  });

  it('fails fast with UNAVAILABLE while both are down, names both in Status, and resumes on its own', async t => {
    const server = await startTransitServer(t);
    const config = await writeFailoverConfig(t, hsmToken, server, {
      keyLabel: 'kek-both-down',
      callMs: CALL_MS,
    });
    const { hsm, log } = await startFailoverApp(t, config.path);
    const client = createKmsV2Client(config.socket, CLIENT_TIMEOUT_MS);
    defer(t, () => client.close());
    const admin = adminClient(config.adminSocket);
    const written = await encryptSome(client, 10);

    hsm.fail();
    await server.kill();
    const unhealthy = await until(
      () => client.status(),
      status => /^unhealthy backends: hsm \(.+\), vault \(.+\)$/.test(status.healthz),
      'Status names both backends',
    );
    t.diagnostic(`healthz: ${unhealthy.healthz}`);
    assert.match(unhealthy.healthz, new RegExp(`hsm \\(${INJECTED_CAUSE}\\)`));
    assert.match(unhealthy.healthz, /vault \((ECONNREFUSED|ECONNRESET|DEADLINE_EXCEEDED)\)/);
    assert.deepEqual((await adminStatus(admin, config.viewerToken)).degraded, ['hsm', 'vault']);
    assert.equal((await admin.get('/readyz')).status, 503);

    const timed = async (call: Promise<unknown>) => {
      const started = performance.now();
      const [result] = await Promise.allSettled([call]);
      return { ms: performance.now() - started, result };
    };
    const calls = await Promise.all([
      ...Array.from({ length: 16 }, () => timed(client.encrypt(randomBytes(32)))),
      ...written.map(sealed => timed(decryptOne(client, sealed))),
    ]);
    const slowest = Math.max(...calls.map(call => call.ms));
    t.diagnostic(`both down: ${calls.length} calls failed, slowest after ${Math.round(slowest)} ms`);
    for (const [i, { ms, result }] of calls.entries()) {
      if (result.status !== 'rejected') assert.fail(`call ${i} succeeded with both backends down`);
      const error = result.reason as { code?: number; details?: string };
      assert.equal(error.code, GrpcStatus.UNAVAILABLE, `call ${i}: ${error.code} ${error.details}`);
      assert.match(error.details ?? '', /^BACKEND_UNAVAILABLE: /);
      assert.ok(ms < CALL_MS / 2, `call ${i} settled after ${Math.round(ms)} ms, budget ${CALL_MS} ms`);
    }

    // Both back: no restart, nothing done to the broker.
    hsm.recover();
    await server.restart();
    const resumed = await until(
      () => encryptOne(client).catch(() => undefined),
      sealed => sealed !== undefined && wrapsOf(sealed).length === 2,
      'an Encrypt with both wraps',
    );
    assert.ok(resumed);
    assert.deepEqual(await decryptEachWrap(client, resumed), ['hsm', 'vault']);
    await until(
      () => client.status(),
      status => status.healthz === 'ok',
      'Status ok again',
    );
    await decryptAll(client, written, 'after both came back');
    assert.equal(log.records.filter(record => record.msg === 'broker started').length, 1, 'one start');
  });

  it('keeps Encrypt fast while OpenBao hangs: a backend whose breaker is open takes no writes', async t => {
    const server = await startTransitServer(t);
    const config = await writeFailoverConfig(t, hsmToken, server, { keyLabel: 'kek-hangs', callMs: CALL_MS });
    await startFailoverApp(t, config.path);
    const client = createKmsV2Client(config.socket, CLIENT_TIMEOUT_MS);
    defer(t, () => client.close());
    const admin = adminClient(config.adminSocket);
    const written = await encryptSome(client, 5);

    // OpenBao dies and something that accepts connections but never answers takes its port.
    await server.kill();
    const silent = await listenSilently(server.port);
    let silentOpen = true;
    defer(t, () => (silentOpen ? silent.close() : undefined));
    await until(
      () => adminBackend(admin, config.viewerToken, 'vault'),
      backend => backend.breaker === 'open',
      'vault breaker open',
    );

    const timedEncrypt = async () => {
      const started = performance.now();
      const sealed = await encryptOne(client);
      return { ms: performance.now() - started, sealed };
    };
    const results = await Promise.all(Array.from({ length: 10 }, () => timedEncrypt()));
    const slowest = Math.max(...results.map(result => result.ms));
    t.diagnostic(
      `vault hanging, breaker open: 10 Encrypts, slowest ${Math.round(slowest)} ms (budget ${CALL_MS} ms)`,
    );
    for (const { sealed } of results) assert.deepEqual(wrapsOf(sealed), ['hsm']);
    assert.ok(silent.connections() > 0, 'the broker did reach the silent listener (a hang, not a refusal)');
    await decryptAll(client, written, 'both wraps, vault hanging');
    assert.ok(
      slowest < CALL_MS / 2,
      `an Encrypt waited ${Math.round(slowest)} ms on a backend whose breaker is open (the HSM wrapped at once)`,
    );

    await silent.close();
    silentOpen = false;
    await server.restart();
    const healed = await until(
      () => encryptOne(client),
      sealed => wrapsOf(sealed).length === 2,
      'writes carry both wraps again',
      15000,
    );
    await decryptAll(
      client,
      [...written, ...results.map(result => result.sealed), healed],
      'after OpenBao is back',
    );
  });

  it('reads through the HSM wrap in time while the first wrap in the order hangs and its breaker is still closed', async t => {
    const server = await startTransitServer(t);
    // Vault first in the order, and no probes after the first round: only calls can tell the
    // broker that Vault hangs, so the first Decrypts still try Vault's wrap first.
    const config = await writeFailoverConfig(t, hsmToken, server, {
      keyLabel: 'kek-first-hangs',
      callMs: CALL_MS,
      order: ['vault', 'hsm'],
      probeIntervalMs: 3600000,
    });
    await startFailoverApp(t, config.path);
    const client = createKmsV2Client(config.socket, CLIENT_TIMEOUT_MS);
    defer(t, () => client.close());
    const written = await encryptSome(client, 2);
    for (const sealed of written) assert.deepEqual(wrapsOf(sealed).sort(), ['hsm', 'vault']);

    await server.kill();
    const silent = await listenSilently(server.port);
    defer(t, () => silent.close());
    const before = await adminBackend(adminClient(config.adminSocket), config.viewerToken, 'vault');
    assert.equal(before.breaker, 'closed', 'nothing told the broker yet that Vault hangs');
    // One at a time, fewer than the failure threshold (3): Vault's breaker stays closed. (A
    // keep-alive connection that the kill closed may fail the first try at once instead.)
    const times: number[] = [];
    for (const sealed of written) {
      const started = performance.now();
      assert.deepEqual(await decryptOne(client, sealed), sealed.seed);
      times.push(performance.now() - started);
    }
    t.diagnostic(
      `Vault hanging, breaker closed: Decrypts through the HSM in ${times.map(Math.round).join(', ')} ms`,
    );
    // Vault's try was cut at its share of the budget (half: two wraps), then the HSM answered.
    assert.ok(
      times.some(ms => ms >= CALL_MS / 2 - CLOCK_SLACK_MS),
      'a Decrypt tried the hanging wrap first',
    );
    for (const ms of times)
      assert.ok(ms < CALL_MS, `the HSM wrap answered inside the budget (${Math.round(ms)} ms)`);
    assert.ok(silent.connections() > 0, 'the broker did reach the silent listener (a hang, not a refusal)');
  });

  it('with wrap: first, moves writes to a never-failed vault as soon as the HSM fails, even right after start', async t => {
    // A long hysteresis makes the difference plain: it guards a return to a backend that was
    // down, and vault never was. (The broker has been up well under the hysteresis here.)
    const hysteresisMs = 5000;
    const server = await startTransitServer(t);
    const config = await writeFailoverConfig(t, hsmToken, server, {
      keyLabel: 'kek-first-at-start',
      wrap: 'first',
      hysteresisMs,
    });
    const { hsm, log } = await startFailoverApp(t, config.path);
    const client = createKmsV2Client(config.socket, CLIENT_TIMEOUT_MS);
    defer(t, () => client.close());
    const started = log.records.find(record => record.msg === 'broker started');
    assert.ok(started);
    assert.deepEqual(wrapsOf(await encryptOne(client)), ['hsm']);

    const failedAt = Date.now();
    hsm.fail();
    // Bounded loop of real Encrypts until one succeeds (on vault), or the hysteresis is spent.
    let failed = 0;
    let moved: Sealed | undefined;
    for (let attempt = 0; attempt < 500 && Date.now() - failedAt < hysteresisMs + 2000; attempt++) {
      try {
        moved = await encryptOne(client);
        break;
      } catch (error) {
        assert.equal((error as { code?: number }).code, GrpcStatus.UNAVAILABLE);
        failed++;
        await pause(20);
      }
    }
    const tookMs = Date.now() - failedAt;
    t.diagnostic(
      `broker up ${failedAt - logTime(started)} ms when the HSM failed; writes resumed after ${tookMs} ms, ${failed} Encrypts failed`,
    );
    assert.ok(moved, 'writes moved to vault');
    assert.deepEqual(wrapsOf(moved), ['vault']);
    assert.ok(
      tookMs < 1000,
      `writes failed for ${tookMs} ms (${failed} Encrypts) with a healthy vault that was never down`,
    );
    hsm.recover();
  });

  it('with wrap: first, moves writes off a flapping HSM once and back only after the hysteresis', async t => {
    const server = await startTransitServer(t);
    const config = await writeFailoverConfig(t, hsmToken, server, {
      keyLabel: 'kek-flapping',
      wrap: 'first',
      hysteresisMs: HYSTERESIS_MS,
    });
    const { hsm, log } = await startFailoverApp(t, config.path);
    const client = createKmsV2Client(config.socket, CLIENT_TIMEOUT_MS);
    defer(t, () => client.close());

    const started = log.records.find(record => record.msg === 'broker started');
    assert.ok(started);
    const first = await encryptOne(client);
    assert.deepEqual(wrapsOf(first), ['hsm'], 'wrap: first: the HSM alone wraps');
    const keyId = first.keyId;
    const traffic = startTraffic(client, [first], { workers: 2 });
    defer(t, () => traffic.stop());
    await traffic.until(() => traffic.outcomes.length >= 10, 'traffic before flapping');

    // Flap: down and up every 150 ms for about 3 s (a fault schedule, bounded in count and time).
    const flapMs = 3000;
    const mark = log.records.length;
    const flapStart = Date.now();
    for (let i = 0; i < 40 && Date.now() - flapStart < flapMs; i++) {
      if (i % 2 === 0) hsm.fail();
      else hsm.recover();
      await pause(150);
    }
    hsm.recover();
    const flapEnd = Date.now();
    const changes = (from: number, to = Infinity) =>
      log.records.slice(from).filter(record => record.msg === 'key set changed' && logTime(record) <= to);
    const moves = () =>
      log.records.slice(mark).filter(record => record.msg === 'writes moved to another backend');
    const during = changes(mark, flapEnd);
    t.diagnostic(
      `flapping ${flapEnd - flapStart} ms: ${during.length} key_id change(s): ${moves()
        .map(record => `${String(record.backend)}@${logTime(record) - flapStart}ms`)
        .join(', ')}`,
    );
    assert.ok(during.length >= 1, 'writes moved when the HSM first failed');
    const maxChanges = Math.ceil((flapEnd - flapStart) / HYSTERESIS_MS) + 1;
    assert.ok(during.length <= maxChanges, `${during.length} key_id changes in ${flapEnd - flapStart} ms`);
    const firstMove = moves()[0];
    assert.equal(firstMove?.backend, 'vault', 'the first move is to vault');
    // ... as soon as the HSM was seen failing: vault was never down, so no hysteresis holds it back.
    const firstUnhealthy = log.records
      .slice(mark)
      .find(record => record.msg === 'backend unhealthy' && record.backend === 'hsm');
    assert.ok(firstUnhealthy && firstMove);
    const moveLagMs = logTime(firstMove) - logTime(firstUnhealthy);

    // Stable again: writes return to the HSM once it has been closed for the hysteresis.
    const back = await log.waitFor(
      record =>
        record.msg === 'writes moved to another backend' &&
        record.backend === 'hsm' &&
        logTime(record) >= flapStart,
      15000,
      mark,
    );
    const recovered = log.records
      .slice(mark, log.records.indexOf(back))
      .filter(record => record.msg === 'backend recovered' && record.backend === 'hsm');
    const lastRecovered: LogEntry | undefined = recovered.at(-1);
    assert.ok(lastRecovered);
    const closedForMs = logTime(back) - logTime(lastRecovered);
    t.diagnostic(
      `writes returned to the HSM ${logTime(back) - flapEnd} ms after flapping stopped, closed for ${closedForMs} ms`,
    );
    assert.ok(closedForMs >= HYSTERESIS_MS - CLOCK_SLACK_MS, `returned after ${closedForMs} ms closed`);
    await traffic.stop();

    const finalKeyId = String(back.keyId);
    const after = await encryptOne(client);
    assert.deepEqual(wrapsOf(after), ['hsm']);
    assert.equal(after.keyId, finalKeyId);
    await keyIdStaysFor(client, finalKeyId, 2 * HYSTERESIS_MS);
    const allChanges = changes(mark);
    const keyIds = [keyId, ...allChanges.map(record => String(record.keyId))];
    assert.equal(new Set(keyIds).size, keyIds.length, 'no key_id is ever reused');
    assert.ok(allChanges.length <= maxChanges + 1);

    // Calls may fail while the HSM is down and still writes, never otherwise than UNAVAILABLE.
    const failures = failuresOf(traffic);
    for (const failure of failures) {
      assert.ok(
        failure.error?.code === GrpcStatus.UNAVAILABLE ||
          failure.error?.code === GrpcStatus.DEADLINE_EXCEEDED,
        `unexpected failure: ${JSON.stringify(failure.error)}`,
      );
    }
    const byBackend = new Map<string, number>();
    for (const sealed of traffic.written) {
      const [backend = '?'] = wrapsOf(sealed);
      byBackend.set(backend, (byBackend.get(backend) ?? 0) + 1);
    }
    t.diagnostic(
      `traffic: ${traffic.outcomes.length} calls, ${failures.length} failed (UNAVAILABLE), writes by backend ${JSON.stringify(Object.fromEntries(byBackend))}`,
    );
    assert.ok((byBackend.get('vault') ?? 0) > 0, 'some writes went to vault while the HSM flapped');
    await decryptAll(client, [first, ...traffic.written, after], 'everything written during the flapping');
    // Checked last, so that everything above is checked even while this fails.
    assert.ok(
      moveLagMs <= 2 * PROBE_INTERVAL_MS,
      `writes moved to vault ${moveLagMs} ms after the HSM was seen failing (broker up ${flapStart - logTime(started)} ms at the first fault)`,
    );
  });
});

/** A Decrypt that answered with another seed: never acceptable, whatever the faults. */
class WrongPlaintext extends Error {
  readonly details = 'WRONG PLAINTEXT';
}

function isDeep(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((value, i) => value === b[i]);
}

function lastProbeOf(app: RunningApp, backend: string): string | undefined {
  return app.broker.admin.backends().find(view => view.name === backend)?.lastProbeAt;
}
