// The Google Cloud KMS backend through the broker's socket, against the in-process Cloud KMS
// fake (test/helpers/gcp-kms-fake.ts) that serves the official API definitions over TLS to
// the real @google-cloud/kms client: round trips with a least-privilege service account and
// with workload identity federation, version pinning, rotation through the broker and in the
// service, throttling and outages inside the deadline, refused credentials and permissions,
// and the backend beside SoftHSM in a `wrap: all` order with the Cloud KMS server stopped.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { after, before, describe, it, type TestContext } from 'node:test';
import { promisify } from 'node:util';
import { status as GrpcStatus } from '@grpc/grpc-js';
import { decodeEnvelope } from '../../src/broker/envelope.ts';
import { createKmsV2Client, type KmsV2Client } from '../../src/grpc/kms-v2-client.ts';
import { CLI, spawnBroker, startBrokerProcess, type BrokerProcess } from '../helpers/broker-process.ts';
import { pkcs11Backend, writeConfig, type TestConfig } from '../helpers/config.ts';
import { decryptOne, encryptOne, encryptSome, until, wrapsOf } from '../helpers/fault-injection.ts';
import {
  ALL_PERMISSIONS,
  BROKER_PERMISSIONS,
  gcpKmsBackend,
  startGcpKmsFake,
  type GcpKmsFake,
} from '../helpers/gcp-kms-fake.ts';
import { expectGrpcError } from '../helpers/grpc.ts';
import { createToken } from '../helpers/softhsm.ts';
import { defer } from '../helpers/test-scope.ts';
import { expectAdoptedOnceStable } from '../helpers/rotation-adoption.ts';
import { headerOf } from '../helpers/envelopes.ts';

const run = promisify(execFile);
/** The broker's budget per KMS call in these tests, and the client's, far beyond it. */
const CALL_MS = 1500;
const CLIENT_TIMEOUT_MS = 15000;

interface Running {
  readonly config: TestConfig;
  readonly broker: BrokerProcess;
  readonly client: KmsV2Client;
}

describe('Google Cloud KMS backend on the Cloud KMS fake', () => {
  let fake: GcpKmsFake;
  let keys = 0;

  before(async () => {
    fake = await startGcpKmsFake();
  });
  after(() => fake.close());

  /** A fresh key (version 1 primary) in the fake, so that tests never share key state. */
  function newKey(protectionLevel?: 'SOFTWARE' | 'HSM'): string {
    const name = fake.keyName(`kek-${++keys}`);
    fake.createKey(name, protectionLevel);
    return name;
  }

  async function serve(
    t: TestContext,
    backend: Record<string, unknown>,
    top: Record<string, unknown> = {},
    env: NodeJS.ProcessEnv = fake.env,
  ): Promise<Running> {
    const config = writeConfig(undefined, {
      backends: [backend],
      failover: { order: ['gcp'] },
      timeouts: { callMs: CALL_MS },
      ...top,
    });
    const broker = await startBrokerProcess(config.path, env);
    defer(t, () => broker.stop());
    const client = createKmsV2Client(config.socket, CLIENT_TIMEOUT_MS);
    defer(t, () => client.close());
    return { config, broker, client };
  }

  /** Starts a broker that must refuse to start, and returns what it printed. */
  async function refusal(t: TestContext, backend: Record<string, unknown>): Promise<string> {
    const config = writeConfig(undefined, { backends: [backend], failover: { order: ['gcp'] } });
    const broker = spawnBroker(config.path, fake.env);
    defer(t, () => broker.stop('SIGKILL'));
    assert.equal(await broker.exited, 1);
    return broker.text.join('\n') + JSON.stringify(broker.logs);
  }

  async function roundTrip(
    client: KmsV2Client,
  ): Promise<{ ciphertext: Buffer; key_id: string; seed: Buffer }> {
    const seed = randomBytes(32);
    const encrypted = await client.encrypt(seed);
    const { plaintext } = await client.decrypt({
      ciphertext: encrypted.ciphertext,
      key_id: encrypted.key_id,
    });
    assert.deepEqual(plaintext, seed);
    return { ciphertext: encrypted.ciphertext, key_id: encrypted.key_id, seed };
  }

  it('round-trips with a least-privilege service account, refuses tampered wraps, and probes with key reads, never an Encrypt', async t => {
    const keyName = newKey();
    const { client, broker } = await serve(
      t,
      gcpKmsBackend(fake, keyName, fake.serviceAccount(BROKER_PERMISSIONS)),
    );
    const status = await client.status();
    assert.equal(status.healthz, 'ok');
    const { ciphertext, key_id } = await roundTrip(client);
    assert.equal(key_id, status.key_id);
    assert.deepEqual(headerOf(ciphertext), { backend: 'gcp', keyVersion: '1', mechanism: 'gcp-kms' });
    assert.ok(ciphertext.length <= 1024);
    process.stdout.write(`# gcp-kms envelope for a 32-byte seed: ${ciphertext.length} bytes\n`);

    // Status is answered from memory; the health monitor reads the key (GetCryptoKey).
    const encrypts = fake.calls('Encrypt');
    const reads = fake.calls('GetCryptoKey');
    for (let i = 0; i < 20; i++) assert.equal((await client.status()).healthz, 'ok');
    await until(
      () => Promise.resolve(fake.calls('GetCryptoKey')),
      calls => calls >= reads + 2,
      'two health probes',
    );
    assert.equal(fake.calls('Encrypt'), encrypts);
    assert.ok(!broker.logs.some(record => record.msg === 'kms call failed'));

    // A tampered wrap is refused by Cloud KMS (AES-GCM) and answered as bad input.
    const tampered = Buffer.from(ciphertext);
    tampered[tampered.length - 3] = (tampered[tampered.length - 3] ?? 0) ^ 0x10;
    await expectGrpcError(client.decrypt({ ciphertext: tampered, key_id }), GrpcStatus.INVALID_ARGUMENT);
    assert.equal((await client.status()).healthz, 'ok');
  });

  it('rotates an HSM key through the broker: generated, made primary, key_id changes, old wraps decrypt, also after a restart', async t => {
    const keyName = newKey('HSM');
    const backend = gcpKmsBackend(fake, keyName, fake.serviceAccount(ALL_PERMISSIONS));
    const first = await serve(t, backend);
    const old = await roundTrip(first.client);
    const { stdout } = await run(CLI, ['rotate', '--config', first.config.path, '--json']);
    const rotated = JSON.parse(stdout) as { version: string; keyId: string };
    assert.equal(rotated.version, '2');
    assert.equal(fake.primary(keyName), 2);
    // The new HSM version was read until generated before it was made primary.
    assert.ok(fake.calls('GetCryptoKeyVersion') >= 2);
    const fresh = await first.client.encrypt(randomBytes(32));
    assert.equal(fresh.key_id, rotated.keyId);
    assert.equal(decodeEnvelope(fresh.ciphertext).header.keyVersion, '2');
    assert.deepEqual(await reread(first.client, old), old.seed);
    await first.broker.stop();

    // The state file keeps version 2 as the write version and version 1 readable.
    const broker = await startBrokerProcess(first.config.path, fake.env);
    defer(t, () => broker.stop());
    assert.equal((await first.client.status()).key_id, rotated.keyId);
    assert.deepEqual(await reread(first.client, old), old.seed);
    assert.equal(
      decodeEnvelope((await first.client.encrypt(randomBytes(32))).ciphertext).header.keyVersion,
      '2',
    );
  });

  it('keeps wrapping with the pinned version after a rotation in Cloud KMS, and adopts it once stable', async t => {
    const keyName = newKey();
    const stableForMs = 1500;
    const { client, broker } = await serve(
      t,
      gcpKmsBackend(fake, keyName, fake.serviceAccount(BROKER_PERMISSIONS), {
        rotationPoll: { intervalMs: 200, stableForMs },
      }),
    );
    const old = await roundTrip(client);
    assert.equal(fake.rotate(keyName), '2');
    const seen = await broker.waitForLog(record => record.msg === 'new key version seen in the backend');
    // Until adopted, Encrypt names version 1 to Cloud KMS although version 2 is primary.
    const meanwhile = await client.encrypt(randomBytes(32));
    assert.equal(meanwhile.key_id, old.key_id);
    assert.equal(decodeEnvelope(meanwhile.ciphertext).header.keyVersion, '1');
    await expectAdoptedOnceStable(broker, client, seen, old.key_id, stableForMs);
    assert.equal(decodeEnvelope((await client.encrypt(randomBytes(32))).ciphertext).header.keyVersion, '2');
    assert.deepEqual(await reread(client, old), old.seed);
    assert.equal(broker.logs.filter(record => record.msg === 'key set changed').length, 1);

    // An old version disabled in Cloud KMS stops reads of its seeds, clearly, until re-enabled.
    fake.setVersionState(keyName, 1, 'DISABLED');
    await expectGrpcError(
      reread(client, old),
      GrpcStatus.FAILED_PRECONDITION,
      /BACKEND_REJECTED: .*refused to decrypt with the key version that wrapped it \(1\): the version is not enabled/,
    );
    fake.setVersionState(keyName, 1, 'ENABLED');
    assert.deepEqual(await reread(client, old), old.seed);
  });

  it('with federated credentials (STS), retries throttling and corrupt responses inside the deadline, and fails outages as UNAVAILABLE within it', async t => {
    const keyName = newKey();
    const { credentialsFile } = fake.externalAccount(BROKER_PERMISSIONS);
    const { client, broker } = await serve(
      t,
      gcpKmsBackend(fake, keyName, credentialsFile, { requestTimeoutMs: 500, maxConcurrency: 2 }),
      { health: { probeIntervalMs: 3600000, failureThreshold: 100 } },
    );
    const sealed = await roundTrip(client);

    /** Calls Cloud KMS saw for one round trip: [Encrypt, Decrypt]. */
    const attempts = async (trip: () => Promise<unknown>) => {
      const before = [fake.calls('Encrypt'), fake.calls('Decrypt')];
      await trip();
      return [fake.calls('Encrypt') - (before[0] ?? 0), fake.calls('Decrypt') - (before[1] ?? 0)];
    };
    // Two throttled answers, then success: the caller never sees them.
    fake.fail({ methods: ['Encrypt'], code: GrpcStatus.RESOURCE_EXHAUSTED, count: 2 });
    assert.deepEqual(await attempts(() => roundTrip(client)), [3, 1]);
    // A response whose bytes do not match its CRC32C is retried, not returned.
    fake.fail({ methods: ['Encrypt'], corrupt: true, count: 1 });
    fake.fail({ methods: ['Decrypt'], corrupt: true, count: 1 });
    assert.deepEqual(await attempts(() => roundTrip(client)), [2, 2]);

    for (const code of [GrpcStatus.RESOURCE_EXHAUSTED, GrpcStatus.UNAVAILABLE, GrpcStatus.INTERNAL]) {
      fake.fail({ methods: ['Encrypt', 'Decrypt'], code, count: 1000 });
      const started = performance.now();
      const calls = await attempts(async () => {
        await expectGrpcError(client.encrypt(randomBytes(32)), GrpcStatus.UNAVAILABLE, /BACKEND_UNAVAILABLE/);
        await expectGrpcError(reread(client, sealed), GrpcStatus.UNAVAILABLE, /BACKEND_UNAVAILABLE/);
      });
      assert.ok(performance.now() - started < 2 * CALL_MS, `${GrpcStatus[code]} took too long`);
      // Three attempts in all, the library's own retries off.
      assert.deepEqual(calls, [3, 3], GrpcStatus[code]);
      fake.clearFaults();
    }

    // A burst of Decrypts reaches Cloud KMS at most maxConcurrency at a time.
    fake.setDelay(50);
    try {
      const burst = await encryptSome(client, 12);
      fake.resetPeak();
      await Promise.all(burst.map(async item => assert.deepEqual(await decryptOne(client, item), item.seed)));
    } finally {
      fake.setDelay(0);
    }
    assert.equal(fake.maxInFlight(), 2);

    // A server slower than the request timeout: each attempt is cut off, the call still ends in time.
    fake.setDelay(800);
    try {
      const started = performance.now();
      await assert.rejects(client.encrypt(randomBytes(32)), (error: { code?: number }) =>
        [GrpcStatus.UNAVAILABLE, GrpcStatus.DEADLINE_EXCEEDED].includes(error.code ?? -1),
      );
      assert.ok(performance.now() - started < CALL_MS + 500);
    } finally {
      fake.setDelay(0);
    }
    await roundTrip(client);
    assert.ok(broker.logs.some(record => record.msg === 'kms call failed'));
  });

  it('refuses to start with a service-account key Cloud KMS does not know, naming the cause and never the key', async t => {
    const forged = fake.serviceAccount(BROKER_PERMISSIONS, 'forged');
    const json = JSON.parse(readFileSync(forged, 'utf8')) as Record<string, string>;
    // Same account and key id, another private key: the signature does not verify.
    const other = JSON.parse(readFileSync(fake.serviceAccount(BROKER_PERMISSIONS), 'utf8')) as Record<
      string,
      string
    >;
    writeFileSync(forged, JSON.stringify({ ...json, private_key: other.private_key }));
    const output = await refusal(t, gcpKmsBackend(fake, newKey(), forged));
    assert.match(
      output,
      /BACKEND_AUTH_FAILED: backend gcp: Google Cloud KMS refused the broker's credentials/,
    );
    assert.ok(!output.includes('PRIVATE KEY'));
  });

  it('refuses to start when the STS rejects the federated subject token', async t => {
    const { credentialsFile, subjectTokenFile } = fake.externalAccount(BROKER_PERMISSIONS);
    writeFileSync(subjectTokenFile, 'a-token-the-sts-never-issued');
    const output = await refusal(t, gcpKmsBackend(fake, newKey(), credentialsFile));
    assert.match(
      output,
      /BACKEND_AUTH_FAILED: backend gcp: the credentials .* were refused .*TOKEN_HTTP_400/,
    );
    assert.ok(!output.includes('a-token-the-sts-never-issued'));
  });

  it('names the missing IAM permission when Cloud KMS denies a call', async t => {
    const keyName = newKey();
    const encryptOnly = BROKER_PERMISSIONS.filter(permission => !permission.endsWith('useToDecrypt'));
    const { client } = await serve(t, gcpKmsBackend(fake, keyName, fake.serviceAccount(encryptOnly)));
    const encrypted = await client.encrypt(randomBytes(32));
    await expectGrpcError(
      reread(client, encrypted),
      GrpcStatus.FAILED_PRECONDITION,
      new RegExp(`BACKEND_PERMISSION_DENIED: .*cloudkms\\.cryptoKeyVersions\\.useToDecrypt on ${keyName}$`),
    );
  });

  it('names createIfMissing for an absent key, and creates the key with it', async t => {
    const keyName = fake.keyName(`absent-${++keys}`);
    const credentialsFile = fake.serviceAccount(ALL_PERMISSIONS);
    const output = await refusal(t, gcpKmsBackend(fake, keyName, credentialsFile));
    assert.match(output, /KEY_MISSING: backend gcp holds no key version; set createIfMissing: true/);
    const { client } = await serve(
      t,
      gcpKmsBackend(fake, keyName, credentialsFile, { createIfMissing: true }),
    );
    assert.equal(decodeEnvelope((await roundTrip(client)).ciphertext).header.keyVersion, '1');
    assert.equal(fake.primary(keyName), 1);
  });

  it('keeps reads and writes going in a wrap: all order with SoftHSM while the Cloud KMS server is down', async t => {
    const token = createToken('gcp-all');
    defer(t, () => token.remove());
    const gcp = gcpKmsBackend(fake, newKey(), fake.serviceAccount(BROKER_PERMISSIONS));
    const { client } = await serve(
      t,
      gcp,
      {
        backends: [gcp, pkcs11Backend(token)],
        failover: { order: ['gcp', 'hsm'], wrap: 'all' },
        health: { probeIntervalMs: 300, openCooldownMs: 500 },
      },
      { ...fake.env, SOFTHSM2_CONF: token.conf },
    );
    const sealed = await encryptSome(client, 20);
    for (const item of sealed) assert.deepEqual(wrapsOf(item), ['gcp', 'hsm']);

    // Reads run throughout; the Cloud KMS server goes away in the middle of them.
    let reads = 0;
    let stopped = false;
    const reader = (async () => {
      for (let i = 0; i < 2000 && (!stopped || reads < 200); i++) {
        const item = sealed[i % sealed.length] as (typeof sealed)[number];
        assert.deepEqual(await decryptOne(client, item), item.seed);
        reads++;
        if (reads === 40) {
          await fake.stop();
          stopped = true;
        }
      }
    })();
    await reader;
    assert.ok(stopped && reads >= 200);

    // Writes go on with the SoftHSM wrap alone, and read back.
    const thin = await encryptOne(client);
    assert.deepEqual(wrapsOf(thin), ['hsm']);
    assert.deepEqual(await decryptOne(client, thin), thin.seed);

    await fake.start();
    await until(
      async () => wrapsOf(await encryptOne(client)).length,
      count => count === 2,
      'writes wrapped by Cloud KMS again',
    );
  });
});

/** Decrypts what an Encrypt returned, as the apiserver sends it back. */
async function reread(client: KmsV2Client, sealed: { ciphertext: Buffer; key_id: string }): Promise<Buffer> {
  return (await client.decrypt({ ciphertext: sealed.ciphertext, key_id: sealed.key_id })).plaintext;
}
