// The Vault/OpenBao Transit backend when Vault fails under a serving broker: sealed, killed
// mid-traffic, restarted, sealed before the broker starts, and answering nothing at all. Real
// raft-backed OpenBao servers, real broker processes, a least-privilege token. Every failing
// call must come back well inside its budget with a precise gRPC code (never a hang), Status
// must name the backend, and the broker must recover without a restart of its own.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { status as GrpcStatus } from '@grpc/grpc-js';
import { stringify } from 'yaml';
import { createKmsV2Client, type KmsV2Client } from '../../src/grpc/kms-v2-client.ts';
import {
  spawnBroker,
  startBrokerProcess,
  type BrokerProcess,
  type LogRecord,
} from '../helpers/broker-process.ts';
import { expectGrpcError } from '../helpers/grpc.ts';
import { defer, listenSilently } from '../helpers/test-scope.ts';
import {
  BROKER_POLICY,
  createToken,
  enableTransit,
  startFileServer,
  writePolicy,
  type SealableBaoServer,
} from '../helpers/openbao.ts';

const KEY = 'kek';
const POLICY = 'kms-broker';
/** Long enough that the token outlives the file; renewal is not what these tests are about. */
const TOKEN_TTL = '1h';
/** A probe interval long enough that only the test's own calls feed the health record. */
const NO_PROBES = 3600000;
/** The grpc client's deadline: far beyond every broker budget here, so a hang shows as one. */
const CLIENT_TIMEOUT_MS = 15000;

interface VaultBrokerConfig {
  readonly path: string;
  readonly socket: string;
  readonly statePath: string;
}

/** `text` as a RegExp source that matches it literally (an address's dots). */
function literal(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** A raft-backed OpenBao with Transit mounted and the broker's least-privilege policy. */
async function startVault(t: TestContext): Promise<SealableBaoServer> {
  const server = await startFileServer();
  defer(t, () => server.stop());
  await enableTransit(server);
  await writePolicy(server, POLICY, BROKER_POLICY('transit', KEY, { createIfMissing: true }));
  return server;
}

/**
 * A broker config on `server` as an operator would write it: a token with only the broker's
 * policy, in a file beside the config; the Transit key is created at first start.
 */
async function writeVaultConfig(
  t: TestContext,
  server: SealableBaoServer,
  settings: { callMs: number; probeIntervalMs: number; maxConcurrency?: number },
): Promise<VaultBrokerConfig> {
  const dir = mkdtempSync(join(tmpdir(), 'kmsb-vault-'));
  defer(t, () => rmSync(dir, { recursive: true, force: true }));
  const token = await createToken(server, {
    policies: [POLICY],
    ttl: TOKEN_TTL,
    renewable: true,
    noDefaultPolicy: true,
  });
  const tokenFile = join(dir, 'vault-token');
  writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 });
  const socket = join(dir, 'kms.sock');
  const statePath = join(dir, 'state.json');
  const path = join(dir, 'config.yaml');
  writeFileSync(
    path,
    stringify({
      socket,
      state: { path: statePath },
      log: { level: 'debug' },
      timeouts: { callMs: settings.callMs },
      health: { probeIntervalMs: settings.probeIntervalMs },
      backends: [
        {
          name: 'vault',
          type: 'vault-transit',
          address: server.address,
          key: KEY,
          createIfMissing: true,
          ...(settings.maxConcurrency !== undefined && { maxConcurrency: settings.maxConcurrency }),
          auth: { method: 'token', tokenFile },
        },
      ],
      failover: { order: ['vault'] },
    }),
  );
  return { path, socket, statePath };
}

async function startBroker(
  t: TestContext,
  server: SealableBaoServer,
  config: VaultBrokerConfig,
): Promise<{ broker: BrokerProcess; client: KmsV2Client }> {
  const broker = await startBrokerProcess(config.path, server.env);
  defer(t, () => broker.stop());
  const client = createKmsV2Client(config.socket, CLIENT_TIMEOUT_MS);
  defer(t, () => client.close());
  return { broker, client };
}

interface Sealed {
  readonly seed: Buffer;
  readonly ciphertext: Buffer;
  readonly key_id: string;
}

async function encryptSome(client: KmsV2Client, count: number): Promise<Sealed[]> {
  const seeds = Array.from({ length: count }, () => randomBytes(32));
  const encrypted = await Promise.all(seeds.map(seed => client.encrypt(seed)));
  return seeds.map((seed, i) => {
    const result = encrypted[i];
    assert.ok(result);
    return { seed, ciphertext: result.ciphertext, key_id: result.key_id };
  });
}

async function decryptAll(client: KmsV2Client, items: readonly Sealed[]): Promise<void> {
  const plaintexts = await Promise.all(
    items.map(item => client.decrypt({ ciphertext: item.ciphertext, key_id: item.key_id })),
  );
  plaintexts.forEach((result, i) => assert.deepEqual(result.plaintext, items[i]?.seed));
}

/** A fresh Encrypt and Decrypt of it: the backend works end to end. */
async function roundTrip(client: KmsV2Client): Promise<void> {
  const [item] = await encryptSome(client, 1);
  assert.ok(item);
  await decryptAll(client, [item]);
}

/** Runs a call and measures it, settled either way. */
/** Retries `attempt` until it succeeds; bounded in count and time. */
async function untilWorks(attempt: () => Promise<unknown>, what: string): Promise<void> {
  const endAt = Date.now() + 30000;
  let last: unknown;
  for (let tries = 0; tries < 100 && Date.now() < endAt; tries++) {
    try {
      await attempt();
      return;
    } catch (error) {
      last = error;
      await new Promise(resolve => setTimeout(resolve, 100));
    }
  }
  throw new Error(`${what}: never worked; last error: ${String((last as Error | undefined)?.message)}`);
}

async function timed<T>(call: Promise<T>): Promise<{ ms: number; result: PromiseSettledResult<T> }> {
  const started = performance.now();
  const [result] = await Promise.allSettled([call]);
  assert.ok(result);
  return { ms: performance.now() - started, result };
}

/**
 * Asserts that a call fails with `code` and a detail the broker wrote (its catalog code,
 * not grpc-js's own client-side deadline), within `maxMs`.
 */
async function expectFastFailure(
  call: Promise<unknown>,
  code: number,
  details: RegExp,
  maxMs: number,
  label: string,
): Promise<number> {
  const started = performance.now();
  await expectGrpcError(call, code, details, label);
  const ms = performance.now() - started;
  assert.ok(ms < maxMs, `${label}: failed after ${Math.round(ms)} ms, expected < ${maxMs} ms`);
  return ms;
}

/** The first log line matching `predicate` that the broker wrote after `mark` lines. */
function loggedAfter(
  broker: BrokerProcess,
  mark: number,
  predicate: (record: LogRecord) => boolean,
): (record: LogRecord) => boolean {
  return record => broker.logs.indexOf(record) >= mark && predicate(record);
}

/**
 * Status until healthz equals `expected`: a bounded loop of real Status calls (Status is
 * answered from memory, so asking often costs nothing), for states only a probe can reach.
 */
async function waitForHealthz(client: KmsV2Client, expected: string, timeoutMs = 10000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  for (let attempt = 0; attempt < 1000 && Date.now() < deadline; attempt++) {
    last = (await client.status()).healthz;
    if (last === expected) return;
    await new Promise(resolve => setTimeout(resolve, 20));
  }
  assert.fail(`Status healthz stayed '${last}', expected '${expected}' within ${timeoutMs} ms`);
}

const isVault = (msg: string) => (record: LogRecord) => record.msg === msg && record.backend === 'vault';

describe('Vault Transit backend under faults', () => {
  it('fails calls as UNAVAILABLE at once while Vault is sealed, reports it in Status, and recovers on unseal without a restart', async t => {
    const server = await startVault(t);
    const config = await writeVaultConfig(t, server, { callMs: 2500, probeIntervalMs: 200 });
    const { broker, client } = await startBroker(t, server, config);
    const before = await encryptSome(client, 5);
    const keyId = (await client.status()).key_id;
    assert.equal((await client.status()).healthz, 'ok');

    await server.seal();
    // No call has failed yet: the background probe alone notices the seal. (While OpenBao is
    // sealing, about a second, it holds requests, so a probe then may time out instead; once
    // sealed, it answers 503 at once and the probe names the seal.)
    await broker.waitForLog(isVault('backend unhealthy'), 10000);
    await waitForHealthz(client, 'unhealthy backends: vault (VAULT_SEALED)');
    assert.equal((await client.status()).key_id, keyId, 'key_id does not change with momentary health');

    // A sealed Vault answers 503 at once: the bounded retries must not wait out the 2.5 s budget.
    const unavailable = new RegExp(
      `^BACKEND_UNAVAILABLE: backend vault: Vault at ${literal(server.address)} is unavailable \\(VAULT_SEALED\\)$`,
    );
    const encryptMs = await expectFastFailure(
      client.encrypt(randomBytes(32)),
      GrpcStatus.UNAVAILABLE,
      unavailable,
      2000,
      'encrypt while sealed',
    );
    const first = before[0];
    assert.ok(first);
    const decryptMs = await expectFastFailure(
      client.decrypt({ ciphertext: first.ciphertext, key_id: first.key_id }),
      GrpcStatus.UNAVAILABLE,
      unavailable,
      2000,
      'decrypt while sealed',
    );
    t.diagnostic(
      `sealed: encrypt failed in ${Math.round(encryptMs)} ms, decrypt in ${Math.round(decryptMs)} ms`,
    );

    const mark = broker.logs.length;
    await server.unseal();
    // Again no call: the probe sees Vault back, and Status says so.
    await broker.waitForLog(loggedAfter(broker, mark, isVault('backend recovered')), 10000);
    assert.equal((await client.status()).healthz, 'ok');
    assert.equal((await client.status()).key_id, keyId);
    await roundTrip(client);
    await decryptAll(client, before);
    assert.equal(broker.child.exitCode, null, 'the broker never restarted');
  });

  it('settles every call in flight when Vault is killed, keeps serving Status, and recovers when Vault comes back', async t => {
    const server = await startVault(t);
    const callMs = 2500;
    const config = await writeVaultConfig(t, server, { callMs, probeIntervalMs: 200 });
    const { broker, client } = await startBroker(t, server, config);
    const before = await encryptSome(client, 5);
    const item = before[0];
    assert.ok(item);

    const calls = Array.from({ length: 200 }, () =>
      timed(client.decrypt({ ciphertext: item.ciphertext, key_id: item.key_id })),
    );
    await broker.waitForLog(record => record.op === 'decrypt' && record.outcome === 'ok');
    await server.kill();
    const results = await Promise.all(calls);

    let succeeded = 0;
    const failures = new Map<string, number>();
    for (const [i, { result }] of results.entries()) {
      // Each call is answered by the broker, within its own budget, never by the client giving
      // up: the client waits CLIENT_TIMEOUT_MS, several times the broker's budget, so an answer
      // with a broker code proves the budget was kept. (A bound in milliseconds here would
      // measure the machine: on a loaded one the answer leaves on time and arrives late.)
      if (result.status === 'fulfilled') {
        assert.deepEqual(result.value.plaintext, item.seed, `call ${i} got the wrong plaintext`);
        succeeded++;
        continue;
      }
      const error = result.reason as { code?: number; details?: string };
      assert.ok(
        error.code === GrpcStatus.UNAVAILABLE || error.code === GrpcStatus.DEADLINE_EXCEEDED,
        `call ${i}: unexpected gRPC code ${error.code}: ${error.details}`,
      );
      assert.match(error.details ?? '', /^(BACKEND_UNAVAILABLE|DEADLINE_EXCEEDED): /, `call ${i}`);
      const kind = (error.details ?? '').split(':')[0] ?? '';
      failures.set(kind, (failures.get(kind) ?? 0) + 1);
    }
    const slowest = Math.round(Math.max(...results.map(({ ms }) => ms)));
    t.diagnostic(
      `${succeeded} succeeded, failed: ${JSON.stringify(Object.fromEntries(failures))}, slowest ${slowest} ms`,
    );
    assert.ok(succeeded > 0, 'some calls completed before the kill');
    assert.ok(succeeded < results.length, 'the kill landed while calls were in flight');

    // The broker outlives its backend and still answers Status, from memory.
    assert.equal(broker.child.exitCode, null, 'the broker is still running');
    const unhealthy = await broker.waitForLog(isVault('backend unhealthy'));
    // The first failure may be a reset connection or a probe that queued behind the calls;
    // once they have settled, the probe finds nothing listening.
    t.diagnostic(`first unhealthy reason: ${String(unhealthy.reason)}`);
    await waitForHealthz(client, 'unhealthy backends: vault (ECONNREFUSED)');
    await expectFastFailure(
      client.encrypt(randomBytes(32)),
      GrpcStatus.UNAVAILABLE,
      new RegExp(
        `^BACKEND_UNAVAILABLE: backend vault: Vault at ${literal(server.address)} is unavailable \\(ECONNREFUSED\\)$`,
      ),
      2000,
      'encrypt while Vault is down',
    );

    const mark = broker.logs.length;
    await server.restart();
    await broker.waitForLog(loggedAfter(broker, mark, isVault('backend recovered')), 10000);
    assert.equal((await client.status()).healthz, 'ok');
    await decryptAll(client, before);
    await roundTrip(client);
  });

  it('keeps working across a graceful Vault restart, with the token it had', async t => {
    const server = await startVault(t);
    const config = await writeVaultConfig(t, server, { callMs: 2500, probeIntervalMs: NO_PROBES });
    const { broker, client } = await startBroker(t, server, config);
    const before = await encryptSome(client, 5);
    const keyId = (await client.status()).key_id;

    await server.restart();
    // The first calls after the restart already work: pooled connections to the old process
    // are retried on fresh ones, and the token lives in raft storage.
    await decryptAll(client, before);
    await roundTrip(client);
    const status = await client.status();
    assert.equal(status.healthz, 'ok');
    assert.equal(status.key_id, keyId);
    assert.ok(
      !broker.logs.some(record => record.msg === 'kms call failed'),
      `no call failed: ${JSON.stringify(broker.logs.filter(record => record.msg === 'kms call failed'))}`,
    );
    t.diagnostic(
      `re-logins: ${broker.logs.filter(record => record.msg === 'logging in to Vault again').length}`,
    );
  });

  it('refuses to start against a sealed Vault, quickly and naming the backend', async t => {
    const server = await startVault(t);
    const config = await writeVaultConfig(t, server, { callMs: 2500, probeIntervalMs: 200 });
    await server.seal();

    const started = performance.now();
    const broker = spawnBroker(config.path, server.env);
    defer(t, () => broker.stop('SIGKILL'));
    let timer: NodeJS.Timeout | undefined;
    const code = await Promise.race([
      broker.exited,
      new Promise<'timeout'>(resolve => (timer = setTimeout(() => resolve('timeout'), 15000))),
    ]);
    clearTimeout(timer);
    const ms = performance.now() - started;
    t.diagnostic(`the broker exited after ${Math.round(ms)} ms`);
    assert.equal(code, 1, `exit code (after ${Math.round(ms)} ms): ${broker.text.join('\n')}`);
    assert.ok(ms < 5000, `start-up failed only after ${Math.round(ms)} ms`);
    assert.match(
      broker.text.join('\n'),
      new RegExp(
        `kms-broker: BACKEND_UNAVAILABLE: backend vault: cannot log in to Vault at ${literal(server.address)} \\(VAULT_SEALED\\)`,
      ),
    );
    assert.equal(existsSync(config.socket), false, 'no socket is left behind');
    assert.equal(existsSync(config.statePath), false, 'no state is written for a failed start');

    // The same config starts once Vault is unsealed: the seal was the only problem.
    await server.unseal();
    const { client } = await startBroker(t, server, config);
    await roundTrip(client);
  });

  it('answers within its deadline when Vault accepts connections but never replies', async t => {
    const server = await startVault(t);
    const callMs = 500;
    const config = await writeVaultConfig(t, server, { callMs, probeIntervalMs: NO_PROBES });
    const { broker, client } = await startBroker(t, server, config);
    const before = await encryptSome(client, 3);
    const item = before[0];
    assert.ok(item);

    // Vault dies and something that never answers takes its port.
    await server.kill();
    const silent = await listenSilently(server.port);
    let silentClosed = false;
    defer(t, () => (silentClosed ? undefined : silent.close()));

    const calls = [
      ...Array.from({ length: 20 }, () => timed(client.encrypt(randomBytes(32)))),
      ...Array.from({ length: 20 }, () =>
        timed(client.decrypt({ ciphertext: item.ciphertext, key_id: item.key_id })),
      ),
    ];
    const results = await Promise.all(calls);
    const codes = new Map<string, number>();
    for (const [i, { result }] of results.entries()) {
      assert.equal(result.status, 'rejected', `call ${i} succeeded against a silent server`);
      const error = result.reason as { code?: number; details?: string };
      assert.ok(
        error.code === GrpcStatus.DEADLINE_EXCEEDED || error.code === GrpcStatus.UNAVAILABLE,
        `call ${i}: unexpected gRPC code ${error.code}: ${error.details}`,
      );
      // A broker code, not the client's own deadline (CLIENT_TIMEOUT_MS, far beyond the budget):
      // the broker kept its budget against a server that never answers.
      assert.match(error.details ?? '', /^(DEADLINE_EXCEEDED|BACKEND_UNAVAILABLE): /, `call ${i}`);
      const kind = (error.details ?? '').split(':')[0] ?? '';
      codes.set(kind, (codes.get(kind) ?? 0) + 1);
    }
    const slowest = Math.round(Math.max(...results.map(({ ms }) => ms)));
    t.diagnostic(`failed: ${JSON.stringify(Object.fromEntries(codes))}, slowest ${slowest} ms`);
    assert.ok(silent.connections() > 0, 'the broker reached the silent listener (a hang, not a refusal)');
    assert.equal(broker.child.exitCode, null, 'the broker is still running');
    assert.match(
      (await client.status()).healthz,
      /^unhealthy backends: vault \((DEADLINE_EXCEEDED|ECONNABORTED|ETIMEDOUT)\)$/,
    );

    await silent.close();
    silentClosed = true;
    await server.restart();
    // Real calls feed the health record: the first one that works makes Status ok again. A
    // loaded machine may need a few tries within the short budget.
    await untilWorks(() => roundTrip(client), 'a round trip once Vault is back');
    await decryptAll(client, before);
    assert.equal((await client.status()).healthz, 'ok');
  });
});
