// The Alibaba Cloud KMS backend through the broker's socket, against the in-process fake of
// the service (test/helpers/alibaba-kms-fake.ts: the 2016-01-20 RPC API with signature
// checks, real AES-256-GCM per key version, EncryptionContext as AAD, injected faults).
// Real broker processes, real credentials chain (environment variables or files), a real
// SoftHSM token for the failover case.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import { status as GrpcStatus } from '@grpc/grpc-js';
import { decodeEnvelope, encodeEnvelope, headerAad } from '../../src/broker/envelope.ts';
import { createKmsV2Client, type KmsV2Client } from '../../src/grpc/kms-v2-client.ts';
import { adminClient } from '../helpers/admin-http.ts';
import { spawnBroker, startBrokerProcess, type BrokerProcess } from '../helpers/broker-process.ts';
import { pkcs11Backend, writeConfig, type TestConfig } from '../helpers/config.ts';
import { AlibabaKmsFake, FAKE_REGION } from '../helpers/alibaba-kms-fake.ts';
import { expectGrpcError } from '../helpers/grpc.ts';
import { createToken } from '../helpers/softhsm.ts';
import { defer } from '../helpers/test-scope.ts';
import { expectAdoptedOnceStable } from '../helpers/rotation-adoption.ts';
import { headerOf } from '../helpers/envelopes.ts';

const ACCESS_KEY_ID = 'LTAI-broker-test';
const ACCESS_KEY_SECRET = 'broker-secret-do-not-log-0815';
const LIMITED_KEY_ID = 'LTAI-no-decrypt';
const LIMITED_KEY_SECRET = 'limited-secret-do-not-log-4711';
const CALL_MS = 1000;
/** The grpc client's deadline: far beyond the broker's budget, so a hang shows as one. */
const CLIENT_TIMEOUT_MS = 10000;

interface Running {
  readonly config: TestConfig;
  readonly broker: BrokerProcess;
  readonly client: KmsV2Client;
}

/** The broker's environment: the SDK's default chain finds the AccessKey pair here. */
function credentialEnv(id = ACCESS_KEY_ID, secret = ACCESS_KEY_SECRET): NodeJS.ProcessEnv {
  return { ...process.env, ALIBABA_CLOUD_ACCESS_KEY_ID: id, ALIBABA_CLOUD_ACCESS_KEY_SECRET: secret };
}

function alibabaBackend(fake: AlibabaKmsFake, keyId: string, overrides: Record<string, unknown> = {}) {
  return {
    name: 'ali',
    type: 'alibaba-kms',
    regionId: FAKE_REGION,
    keyId,
    endpoint: fake.endpoint,
    ...overrides,
  };
}

async function start(
  t: TestContext,
  config: TestConfig,
  env: NodeJS.ProcessEnv = credentialEnv(),
): Promise<Running> {
  const broker = await startBrokerProcess(config.path, env);
  defer(t, () => broker.stop());
  const client = createKmsV2Client(config.socket, CLIENT_TIMEOUT_MS);
  defer(t, () => client.close());
  return { config, broker, client };
}

interface Written {
  readonly ciphertext: Buffer;
  readonly key_id: string;
  readonly annotations: Record<string, Buffer>;
  readonly seed: Buffer;
}

async function roundTrip(client: KmsV2Client): Promise<Written> {
  const seed = randomBytes(32);
  const { ciphertext, key_id, annotations } = await client.encrypt(seed);
  const written = { ciphertext, key_id, annotations, seed };
  await decryptsTo(client, written);
  return written;
}

async function decryptsTo(client: KmsV2Client, item: Written): Promise<void> {
  const { ciphertext, key_id, annotations } = item;
  const { plaintext } = await client.decrypt({ ciphertext, key_id, annotations });
  assert.deepEqual(plaintext, item.seed);
}

/** Polls a condition, bounded in time and count (no sleeping on guesses). */
async function until(condition: () => boolean, what: string, timeoutMs = 10000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (let i = 0; i < 10000 && Date.now() < deadline; i++) {
    if (condition()) return;
    await new Promise(resolve => setImmediate(resolve));
    await new Promise(resolve => setTimeout(resolve, 20));
  }
  assert.fail(`timed out waiting for ${what}`);
}

describe('Alibaba Cloud KMS backend (in-process fake of the 2016-01-20 API)', () => {
  let fake: AlibabaKmsFake;

  before(async () => {
    fake = await AlibabaKmsFake.start();
    fake.addAccessKey(ACCESS_KEY_ID, ACCESS_KEY_SECRET);
    fake.addAccessKey(LIMITED_KEY_ID, LIMITED_KEY_SECRET, ['DescribeKey', 'ListKeyVersions', 'Encrypt']);
  });
  after(() => fake.stop());

  it('round-trips through the socket with the default credential chain; probes are DescribeKey reads, never Encrypts', async t => {
    const keyId = fake.createKey('alias/round-trip');
    const config = writeConfig(undefined, {
      backends: [alibabaBackend(fake, 'alias/round-trip')],
      failover: { order: ['ali'] },
      health: { probeIntervalMs: 100 },
    });
    const running = await start(t, config);
    const status = await running.client.status();
    assert.equal(status.healthz, 'ok');
    const { ciphertext, key_id } = await roundTrip(running.client);
    assert.equal(key_id, status.key_id);
    assert.deepEqual(headerOf(ciphertext), {
      backend: 'ali',
      keyVersion: fake.primaryVersion(keyId),
      mechanism: 'alibaba-kms',
    });
    assert.ok(ciphertext.length <= 1024);
    process.stdout.write(`# alibaba-kms envelope for a 32-byte seed: ${ciphertext.length} bytes\n`);

    const encrypts = fake.calls.get('Encrypt') ?? 0;
    const describes = fake.calls.get('DescribeKey') ?? 0;
    for (let i = 0; i < 20; i++) assert.equal((await running.client.status()).key_id, key_id);
    await until(() => (fake.calls.get('DescribeKey') ?? 0) >= describes + 3, 'three more probes');
    assert.equal(fake.calls.get('Encrypt'), encrypts, 'Status or a probe called Encrypt');
    assert.ok(!JSON.stringify(running.broker.logs).includes(ACCESS_KEY_SECRET));
  });

  it('refuses a tampered wrap, and a wrap moved under another header, with INVALID_ARGUMENT', async t => {
    fake.createKey('alias/tamper');
    const config = writeConfig(undefined, {
      backends: [alibabaBackend(fake, 'alias/tamper')],
      failover: { order: ['ali'] },
    });
    const running = await start(t, config);
    const { ciphertext, key_id } = await roundTrip(running.client);
    const tampered = Buffer.from(ciphertext);
    tampered[tampered.length - 2] = (tampered[tampered.length - 2] ?? 0) ^ 0x01;
    await expectGrpcError(
      running.client.decrypt({ ciphertext: tampered, key_id }),
      GrpcStatus.INVALID_ARGUMENT,
    );
    // Same wrapped bytes under a header naming another mechanism: the context no longer matches.
    const envelope = decodeEnvelope(ciphertext);
    const moved = encodeEnvelope(
      headerAad({ ...envelope.header, mechanism: 'alibaba-kms-x' }),
      envelope.wrapped,
    );
    await expectGrpcError(running.client.decrypt({ ciphertext: moved, key_id }), GrpcStatus.INVALID_ARGUMENT);
    assert.equal((await running.client.status()).healthz, 'ok');
  });

  it('rotates through the broker (CreateKeyVersion): key_id changes once, old ciphertexts decrypt, also after a restart', async t => {
    const keyId = fake.createKey('alias/rotate');
    const config = writeConfig(undefined, {
      backends: [alibabaBackend(fake, 'alias/rotate')],
      failover: { order: ['ali'] },
    });
    const running = await start(t, config);
    const old = await roundTrip(running.client);
    const first = fake.primaryVersion(keyId);
    const answer = await adminClient(config.adminSocket).post('/v1/backends/ali/rotate', config.adminToken);
    assert.equal(answer.status, 200, answer.text);
    const rotated = answer.body as { version: string; keyId: string };
    assert.equal(rotated.version, fake.primaryVersion(keyId));
    assert.notEqual(rotated.version, first);
    await running.broker.waitForLog(
      record => record.msg === 'key set changed' && record.keyId === rotated.keyId,
    );
    const fresh = await roundTrip(running.client);
    assert.equal(fresh.key_id, rotated.keyId);
    assert.equal(decodeEnvelope(fresh.ciphertext).header.keyVersion, rotated.version);
    await decryptsTo(running.client, old);
    assert.equal(running.broker.logs.filter(record => record.msg === 'key set changed').length, 1);
    assert.ok(!running.broker.logs.some(record => record.msg?.includes('new primary version') === true));

    await running.broker.stop();
    const again = await start(t, config);
    assert.equal((await again.client.status()).key_id, rotated.keyId);
    await decryptsTo(again.client, old);
    await decryptsTo(again.client, fresh);
  });

  it('adopts a rotation done in the service once it is stable; wraps meanwhile record the old version and still decrypt', async t => {
    const keyId = fake.createKey('alias/external');
    const stableForMs = 1500;
    const config = writeConfig(undefined, {
      backends: [alibabaBackend(fake, 'alias/external', { rotationPoll: { intervalMs: 200, stableForMs } })],
      failover: { order: ['ali'] },
    });
    const running = await start(t, config);
    const old = await roundTrip(running.client);
    const first = fake.primaryVersion(keyId);
    const second = fake.rotate(keyId);
    const seen = await running.broker.waitForLog(
      record => record.msg === 'new key version seen in the backend',
    );
    assert.equal(seen.version, second);
    // Encrypt cannot be pinned: the service now wraps under its new primary, while the
    // envelope and key_id keep naming the registry's version until the broker adopts it.
    const meanwhile = await roundTrip(running.client);
    assert.equal(meanwhile.key_id, old.key_id);
    assert.equal(decodeEnvelope(meanwhile.ciphertext).header.keyVersion, first);
    const warned = await running.broker.waitForLog(
      record => record.recordedVersion === first && record.serviceVersion === second,
    );
    assert.equal(warned.level, 'warn');
    await expectAdoptedOnceStable(running.broker, running.client, seen, old.key_id, stableForMs);
    const fresh = await roundTrip(running.client);
    assert.equal(decodeEnvelope(fresh.ciphertext).header.keyVersion, second);
    await decryptsTo(running.client, old);
    await decryptsTo(running.client, meanwhile);
    assert.equal(running.broker.logs.filter(record => record.msg === 'key set changed').length, 1);
  });

  it('ends throttling and server errors in UNAVAILABLE within the deadline, after retries, and recovers', async t => {
    fake.createKey('alias/faults');
    const config = writeConfig(undefined, {
      backends: [alibabaBackend(fake, 'alias/faults')],
      failover: { order: ['ali'] },
      timeouts: { callMs: CALL_MS },
      // Probes would also meet the injected faults; these checks are about the calls.
      health: { probeIntervalMs: 3600000, failureThreshold: 100 },
    });
    const running = await start(t, config);
    const item = await roundTrip(running.client);
    t.after(() => fake.clearFaults());

    fake.inject({ action: 'Encrypt', status: 400, code: 'Throttling' });
    let before = fake.calls.get('Encrypt') ?? 0;
    let started = performance.now();
    await expectGrpcError(running.client.encrypt(randomBytes(32)), GrpcStatus.UNAVAILABLE, /Throttling/);
    const throttledMs = performance.now() - started;
    assert.ok(throttledMs < CALL_MS, `throttled Encrypt took ${throttledMs} ms`);
    assert.equal((fake.calls.get('Encrypt') ?? 0) - before, 3, 'three attempts with backoff');
    fake.clearFaults();

    fake.inject({ action: 'Decrypt', status: 503, code: 'ServiceUnavailableTemporary' });
    before = fake.calls.get('Decrypt') ?? 0;
    started = performance.now();
    await expectGrpcError(
      running.client.decrypt({ ciphertext: item.ciphertext, key_id: item.key_id }),
      GrpcStatus.UNAVAILABLE,
      /ServiceUnavailableTemporary/,
    );
    const failingMs = performance.now() - started;
    assert.ok(failingMs < CALL_MS, `failing Decrypt took ${failingMs} ms`);
    process.stdout.write(
      `# alibaba-kms: throttled Encrypt -> UNAVAILABLE in ${Math.round(throttledMs)} ms, 503 Decrypt in ${Math.round(failingMs)} ms (budget ${CALL_MS} ms)\n`,
    );
    assert.equal((fake.calls.get('Decrypt') ?? 0) - before, 3);
    fake.clearFaults();

    // One throttled answer is absorbed by a retry: the caller never sees it.
    fake.inject({ action: 'Encrypt', status: 400, code: 'Throttling', times: 1 });
    await roundTrip(running.client);
    await decryptsTo(running.client, item);
  });

  it('names the RAM action and the key when a permission is missing (credentials from files)', async t => {
    fake.createKey('alias/limited');
    const config = writeConfig(undefined, {});
    const idFile = join(config.dir, 'ak-id');
    const secretFile = join(config.dir, 'ak-secret');
    writeFileSync(idFile, LIMITED_KEY_ID + '\n', { mode: 0o600 });
    writeFileSync(secretFile, LIMITED_KEY_SECRET + '\n', { mode: 0o600 });
    const withFiles = writeConfig(
      undefined,
      {
        backends: [
          alibabaBackend(fake, 'alias/limited', {
            credentials: { accessKeyIdFile: idFile, accessKeySecretFile: secretFile },
          }),
        ],
        failover: { order: ['ali'] },
      },
      config.dir,
    );
    // No credentials in the environment: the files are the only source.
    const env = { ...process.env };
    delete env.ALIBABA_CLOUD_ACCESS_KEY_ID;
    delete env.ALIBABA_CLOUD_ACCESS_KEY_SECRET;
    const running = await start(t, withFiles, env);
    const encrypted = await running.client.encrypt(randomBytes(32));
    await expectGrpcError(
      running.client.decrypt({ ciphertext: encrypted.ciphertext, key_id: encrypted.key_id }),
      GrpcStatus.FAILED_PRECONDITION,
      /BACKEND_PERMISSION_DENIED: .*kms:Decrypt on acs:kms:cn-hangzhou:\d+:key\/[0-9a-f-]+/,
    );
    assert.ok(!JSON.stringify(running.broker.logs).includes(LIMITED_KEY_SECRET));
  });

  it('refuses to start on an unknown AccessKey, a wrong secret or a missing key, naming each and never the secret', async () => {
    fake.createKey('alias/wrong');
    const auth = /BACKEND_AUTH_FAILED: backend ali: Alibaba Cloud KMS refused the broker's credentials/;
    const cases = [
      {
        key: 'alias/wrong',
        env: credentialEnv('LTAI-unknown', 'whatever-secret-1234'),
        expected: [auth, /InvalidAccessKeyId\.NotFound/],
      },
      {
        key: 'alias/wrong',
        env: credentialEnv(ACCESS_KEY_ID, 'not-the-secret-9876'),
        expected: [auth, /SignatureDoesNotMatch/],
      },
      {
        key: 'alias/absent',
        env: credentialEnv(),
        expected: [
          /KEY_MISSING: backend ali: Alibaba Cloud KMS has no key alias\/absent in region cn-hangzhou/,
        ],
      },
    ];
    // The brokers start at once: each must fail on its own.
    const brokers = cases.map(({ key, env }) => {
      const config = writeConfig(undefined, {
        backends: [alibabaBackend(fake, key)],
        failover: { order: ['ali'] },
      });
      return spawnBroker(config.path, env);
    });
    for (const [index, { env, expected }] of cases.entries()) {
      const broker = brokers[index] as BrokerProcess;
      assert.equal(await broker.exited, 1);
      const output = broker.text.join('\n') + JSON.stringify(broker.logs);
      for (const pattern of expected) assert.match(output, pattern);
      assert.ok(!output.includes(env.ALIBABA_CLOUD_ACCESS_KEY_SECRET as string));
    }
  });

  it('keeps reads and writes going with wrap: all beside SoftHSM when the service stops mid-traffic', async t => {
    const outage = await AlibabaKmsFake.start();
    let stopped = false;
    defer(t, () => (stopped ? undefined : outage.stop()));
    outage.addAccessKey(ACCESS_KEY_ID, ACCESS_KEY_SECRET);
    outage.createKey('alias/failover');
    const token = createToken('ali-failover');
    defer(t, () => token.remove());
    const config = writeConfig(token, {
      backends: [alibabaBackend(outage, 'alias/failover'), pkcs11Backend(token)],
      failover: { order: ['ali', 'hsm'], wrap: 'all' },
      health: { probeIntervalMs: 200 },
    });
    const running = await start(t, config, { ...token.env, ...credentialEnv() });

    const written: Written[] = [];
    const failures: string[] = [];
    let go = true;
    const worker = async () => {
      for (let i = 0; i < 2000 && go; i++) {
        try {
          written.push(await roundTrip(running.client));
          // Reads of older seeds too, spread over everything written so far.
          await decryptsTo(running.client, written[Math.floor(Math.random() * written.length)] as Written);
        } catch (error) {
          failures.push(String((error as { details?: string }).details ?? error));
        }
      }
    };
    const workers = Array.from({ length: 4 }, worker);
    await until(() => written.length >= 40, 'traffic before the outage');
    const beforeOutage = written.length;
    await outage.stop();
    stopped = true;
    await until(() => written.length >= beforeOutage + 100, 'traffic during the outage', 20000);
    go = false;
    await Promise.all(workers);

    assert.deepEqual(failures, []);
    process.stdout.write(
      `# alibaba-kms outage: ${beforeOutage} round trips before, ${written.length - beforeOutage} during, 0 failed\n`,
    );
    // Seeds written before the outage carry both wraps; each still decrypts through SoftHSM.
    for (const item of written.slice(0, beforeOutage)) await decryptsTo(running.client, item);
    assert.equal(decodeEnvelope(written[0]?.ciphertext ?? Buffer.alloc(0)).header.backend, 'ali');
    assert.ok(Object.keys(written[0]?.annotations ?? {}).includes('hsm.wrap.kms-broker.io'));
    // Seeds written during the outage are SoftHSM's alone (under-replicated, not failed).
    const last = written.at(-1) as Written;
    assert.equal(decodeEnvelope(last.ciphertext).header.backend, 'hsm');
    assert.deepEqual(Object.keys(last.annotations), []);
    const status = await running.client.status();
    assert.equal(status.healthz, 'ok');
  });
});
