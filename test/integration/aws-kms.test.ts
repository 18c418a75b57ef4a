// The AWS KMS backend against a real moto server (PyPI moto[server]), through the broker's
// socket: round trips with the header bound as EncryptionContext, pinned versions, rotation
// through the broker (new keys, listed keys) and in AWS (a moved alias), throttling and server
// errors from a fault proxy, refused credentials, and an outage under `wrap: all` with SoftHSM.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { after, before, describe, it, type TestContext } from 'node:test';
import { DecryptCommand, ListResourceTagsCommand } from '@aws-sdk/client-kms';
import { status as GrpcStatus } from '@grpc/grpc-js';
import { HEADER_CONTEXT_KEY } from '../../src/backends/aws-kms/aws-kms-backend.ts';
import { PREVIOUS_KEY_TAG } from '../../src/backends/aws-kms/aws-kms-versions.ts';
import { decodeEnvelope, encodeEnvelope } from '../../src/broker/envelope.ts';
import { createKmsV2Client, type KmsV2Client } from '../../src/grpc/kms-v2-client.ts';
import { adminClient, type AdminClient } from '../helpers/admin-http.ts';
import { startAwsFaultProxy, type AwsFaultProxy } from '../helpers/aws-fault-proxy.ts';
import { spawnBroker, startBrokerProcess, type BrokerProcess } from '../helpers/broker-process.ts';
import { pkcs11Backend, writeConfig, type TestConfig } from '../helpers/config.ts';
import { decryptOne, encryptOne, until, wrapsOf, type Sealed } from '../helpers/fault-injection.ts';
import { expectGrpcError } from '../helpers/grpc.ts';
import {
  aliasTarget,
  awsBackend,
  createAliasedKey,
  createKey,
  MOTO_ACCOUNT,
  MOTO_REGION,
  pointAlias,
  startMoto,
  type MotoServer,
} from '../helpers/moto.ts';
import { createToken, type SoftHsmToken } from '../helpers/softhsm.ts';
import { defer } from '../helpers/test-scope.ts';
import { headerOf } from '../helpers/envelopes.ts';

interface Running {
  readonly config: TestConfig;
  readonly broker: BrokerProcess;
  readonly client: KmsV2Client;
  readonly admin: AdminClient;
}

/** Starts a broker process over `backends` and a client to it; both stop after the test. */
async function serve(
  t: TestContext,
  env: NodeJS.ProcessEnv,
  top: Record<string, unknown>,
  dir?: string,
): Promise<Running> {
  const config = writeConfig(undefined, top, dir);
  const broker = await startBrokerProcess(config.path, env);
  defer(t, () => broker.stop());
  const client = createKmsV2Client(config.socket);
  defer(t, () => client.close());
  return { config, broker, client, admin: adminClient(config.adminSocket) };
}

function awsOnly(
  backend: Record<string, unknown>,
  top: Record<string, unknown> = {},
): Record<string, unknown> {
  return { backends: [backend], failover: { order: ['aws'] }, ...top };
}

async function roundTrip(client: KmsV2Client): Promise<Sealed> {
  const sealed = await encryptOne(client);
  assert.deepEqual(await decryptOne(client, sealed), sealed.seed);
  return sealed;
}

const versionOf = (sealed: Sealed): string => decodeEnvelope(sealed.ciphertext).header.keyVersion;
const uniqueAlias = (what: string): string => `alias/${what}-${randomBytes(4).toString('hex')}`;

async function rotate(running: Running): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await running.admin.request('/v1/backends/aws/rotate', {
    method: 'POST',
    token: running.config.adminToken,
  });
  return { status: response.status, body: response.body as Record<string, unknown> };
}

describe('AWS KMS backend on moto', () => {
  let moto: MotoServer;

  before(async () => {
    moto = await startMoto();
  });
  after(() => moto.stop());

  it('round-trips through the socket with the key id in the envelope and the header bound as EncryptionContext; probes never encrypt', async t => {
    const key = await createAliasedKey(moto.kms, uniqueAlias('rt'));
    const proxy = await startAwsFaultProxy(moto.endpoint);
    defer(t, () => proxy.close());
    const running = await serve(
      t,
      moto.env,
      awsOnly(awsBackend(proxy.endpoint, key.alias), { health: { probeIntervalMs: 100 } }),
    );
    const status = await running.client.status();
    assert.equal(status.healthz, 'ok');
    const sealed = await roundTrip(running.client);
    assert.equal(sealed.keyId, status.key_id);
    const envelope = decodeEnvelope(sealed.ciphertext);
    assert.deepEqual(headerOf(sealed.ciphertext), {
      backend: 'aws',
      keyVersion: key.keyId,
      mechanism: 'aws-kms',
    });
    t.diagnostic(
      `envelope for a 32-byte seed: ${sealed.ciphertext.length} bytes (moto's wrap: ${envelope.wrapped.length})`,
    );
    assert.ok(sealed.ciphertext.length <= 1024);

    // The wrap opens only under the header it was made for.
    const asWrapped = { KeyId: key.arn, CiphertextBlob: envelope.wrapped };
    const opened = await moto.kms.send(
      new DecryptCommand({
        ...asWrapped,
        EncryptionContext: { [HEADER_CONTEXT_KEY]: envelope.aad.toString('base64') },
      }),
    );
    assert.deepEqual(Buffer.from(opened.Plaintext ?? []), sealed.seed);
    await assert.rejects(
      moto.kms.send(
        new DecryptCommand({ ...asWrapped, EncryptionContext: { [HEADER_CONTEXT_KEY]: 'b3RoZXI=' } }),
      ),
      { name: 'InvalidCiphertextException' },
    );

    // A wrap whose bytes were changed is refused as malformed ciphertext, not as an outage.
    const tampered = Buffer.from(envelope.wrapped);
    tampered[tampered.length - 1] = (tampered[tampered.length - 1] ?? 0) ^ 0x01;
    await expectGrpcError(
      running.client.decrypt({ ciphertext: encodeEnvelope(envelope.aad, tampered), key_id: sealed.keyId }),
      GrpcStatus.INVALID_ARGUMENT,
      /could not decrypt the wrapped key/,
    );

    // Status is answered from memory and the health probe is a DescribeKey: probes and Status
    // calls go on, Encrypts do not.
    const describes = proxy.forwarded.DescribeKey ?? 0;
    const encrypts = proxy.forwarded.Encrypt ?? 0;
    for (let i = 0; i < 5; i++) assert.equal((await running.client.status()).healthz, 'ok');
    await until(
      () => Promise.resolve(proxy.forwarded.DescribeKey ?? 0),
      count => count >= describes + 5,
      'five more health probes',
    );
    assert.equal((await running.client.status()).healthz, 'ok');
    assert.equal(proxy.forwarded.Encrypt ?? 0, encrypts);
  });

  it('pins the recorded key while an alias moved in AWS is not yet stable, then adopts it once; old envelopes keep decrypting', async t => {
    const first = await createAliasedKey(moto.kms, uniqueAlias('ext'));
    const proxy = await startAwsFaultProxy(moto.endpoint);
    defer(t, () => proxy.close());
    const top = awsOnly(
      awsBackend(proxy.endpoint, first.alias, { rotationPoll: { intervalMs: 200, stableForMs: 1500 } }),
    );
    const running = await serve(t, moto.env, top);
    const old = await roundTrip(running.client);

    const second = await createKey(moto.kms);
    await pointAlias(moto.kms, first.alias, second.keyId);
    const movedAt = Date.now();
    const meanwhile = await roundTrip(running.client);
    assert.equal(versionOf(meanwhile), first.keyId, 'writes stay on the recorded key until adoption');
    assert.equal(meanwhile.keyId, old.keyId);

    const adopted = await running.broker.waitForLog(
      record => record.msg === 'adopted a rotation done in the backend' && record.version === second.keyId,
    );
    assert.ok(Date.now() - movedAt >= 1500, 'adopted only after stableForMs');
    const fresh = await roundTrip(running.client);
    assert.equal(versionOf(fresh), second.keyId);
    assert.notEqual(fresh.keyId, old.keyId);
    assert.equal(fresh.keyId, adopted.keyId);
    assert.equal((await running.client.status()).key_id, fresh.keyId);
    assert.deepEqual(await decryptOne(running.client, old), old.seed);

    // Adopted once: many polls later, still one adoption and one key set change.
    const describes = proxy.forwarded.DescribeKey ?? 0;
    await until(
      () => Promise.resolve(proxy.forwarded.DescribeKey ?? 0),
      count => count >= describes + 10,
      'ten more polls',
    );
    const adoptions = running.broker.logs.filter(
      record => record.msg === 'adopted a rotation done in the backend',
    );
    assert.equal(adoptions.length, 1);
  });

  it('rotates through the broker by creating a key tagged with its predecessor; after a restart every envelope decrypts and no key is reported missing', async t => {
    const first = await createAliasedKey(moto.kms, uniqueAlias('create'));
    const top = awsOnly(awsBackend(moto.endpoint, first.alias, { rotation: { createKeys: true } }));
    const running = await serve(t, moto.env, top);
    const old = await roundTrip(running.client);

    const rotated = await rotate(running);
    assert.equal(rotated.status, 200, JSON.stringify(rotated.body));
    const created = String(rotated.body.version);
    assert.notEqual(created, first.keyId);
    assert.equal(await aliasTarget(moto.kms, first.alias), created, 'the alias names the new key');
    const { Tags } = await moto.kms.send(new ListResourceTagsCommand({ KeyId: created }));
    assert.deepEqual(Object.fromEntries((Tags ?? []).map(tag => [tag.TagKey, tag.TagValue])), {
      'kms-broker:backend': 'aws',
      [PREVIOUS_KEY_TAG]: first.keyId,
    });
    const fresh = await roundTrip(running.client);
    assert.equal(versionOf(fresh), created);
    assert.equal(fresh.keyId, rotated.body.keyId);
    assert.notEqual(fresh.keyId, old.keyId);
    assert.deepEqual(await decryptOne(running.client, old), old.seed);
    await running.broker.stop();

    const again = await serve(t, moto.env, top, running.config.dir);
    assert.equal((await again.client.status()).key_id, fresh.keyId, 'the write key survives the restart');
    assert.deepEqual(await decryptOne(again.client, old), old.seed);
    assert.deepEqual(await decryptOne(again.client, fresh), fresh.seed);
    const keys = await again.admin.get('/v1/keys', again.config.viewerToken);
    const versions = (keys.body as { backends: Record<string, { version: string; role: string }[]> }).backends
      .aws;
    assert.deepEqual(
      versions?.map(version => [version.version, version.role]),
      [
        [first.keyId, 'active'],
        [created, 'write'],
      ],
    );
    assert.ok(!again.broker.logs.some(record => /missing from the backend/.test(String(record.msg))));
  });

  it('rotates through the broker along rotation.keys, and says so when the list is used up', async t => {
    const first = await createAliasedKey(moto.kms, uniqueAlias('list'));
    const second = await createKey(moto.kms);
    const third = await createKey(moto.kms);
    const top = awsOnly(
      awsBackend(moto.endpoint, first.alias, { rotation: { keys: [first.arn, second.keyId, third.arn] } }),
    );
    const running = await serve(t, moto.env, top);
    const sealed = [await roundTrip(running.client)];
    for (const expected of [second, third]) {
      const rotated = await rotate(running);
      assert.equal(rotated.status, 200, JSON.stringify(rotated.body));
      assert.equal(rotated.body.version, expected.keyId);
      assert.equal(await aliasTarget(moto.kms, first.alias), expected.keyId);
      const fresh = await roundTrip(running.client);
      assert.equal(versionOf(fresh), expected.keyId);
      sealed.push(fresh);
    }
    const usedUp = await rotate(running);
    assert.equal(usedUp.status, 409);
    assert.match(String(usedUp.body.detail), /rotation\.keys has no key after/);
    for (const item of sealed) assert.deepEqual(await decryptOne(running.client, item), item.seed);
  });

  describe('faults answered by a proxy in front of moto', () => {
    let proxy: AwsFaultProxy | undefined;
    let running: Running | undefined;
    const CALL_MS = 1000;

    before(async () => {
      const key = await createAliasedKey(moto.kms, uniqueAlias('faults'));
      proxy = await startAwsFaultProxy(moto.endpoint);
      // The breaker stays out of the way: these tests are about one call's retries.
      const config = writeConfig(
        undefined,
        awsOnly(awsBackend(proxy.endpoint, key.alias), {
          timeouts: { callMs: CALL_MS },
          health: { probeIntervalMs: 500, failureThreshold: 100 },
        }),
      );
      const broker = await startBrokerProcess(config.path, moto.env);
      running = {
        config,
        broker,
        client: createKmsV2Client(config.socket),
        admin: adminClient(config.adminSocket),
      };
    });
    after(async () => {
      running?.client.close();
      await running?.broker.stop();
      await proxy?.close();
    });

    /** What before() started; a test only runs once it has. */
    const started = (): { proxy: AwsFaultProxy; running: Running } => {
      assert.ok(proxy !== undefined && running !== undefined);
      return { proxy, running };
    };

    it('retries a single throttled Encrypt with backoff and succeeds', async () => {
      const { proxy, running } = started();
      proxy.inject('Encrypt', 'throttle', 1);
      const before = proxy.injected.Encrypt ?? 0;
      await roundTrip(running.client);
      assert.equal((proxy.injected.Encrypt ?? 0) - before, 1);
    });

    it('answers FAILED_PRECONDITION naming the permission and the key when AWS denies Decrypt', async () => {
      const { proxy, running } = started();
      const sealed = await roundTrip(running.client);
      const before = proxy.injected.Decrypt ?? 0;
      proxy.inject('Decrypt', 'denied');
      const arn = `arn:aws:kms:${MOTO_REGION}:${MOTO_ACCOUNT}:key/${versionOf(sealed)}`;
      await expectGrpcError(
        decryptOne(running.client, sealed),
        GrpcStatus.FAILED_PRECONDITION,
        new RegExp(`denied the broker's credentials kms:Decrypt on ${arn}$`),
      );
      proxy.clear();
      assert.equal((proxy.injected.Decrypt ?? 0) - before, 1, 'a denial is not retried');
    });

    for (const [operation, fault] of [
      ['Encrypt', 'throttle'],
      ['Encrypt', 503],
      ['Decrypt', 500],
      ['Decrypt', 'throttle'],
    ] as const) {
      it(`answers UNAVAILABLE within the deadline while every ${operation} gets ${fault}`, async () => {
        const { proxy, running } = started();
        const sealed = operation === 'Decrypt' ? await roundTrip(running.client) : undefined;
        const before = proxy.injected[operation] ?? 0;
        proxy.inject(operation, fault);
        const startedAt = Date.now();
        await expectGrpcError(
          sealed === undefined ? running.client.encrypt(randomBytes(32)) : decryptOne(running.client, sealed),
          GrpcStatus.UNAVAILABLE,
          /AWS KMS is unavailable/,
        );
        const elapsed = Date.now() - startedAt;
        const attempts = (proxy.injected[operation] ?? 0) - before;
        proxy.clear();
        assert.ok(elapsed < CALL_MS + 500, `answered after ${elapsed} ms`);
        // Retried (the bound of 3 attempts per call is pinned in the unit tests; the health
        // monitor's canary may add its own).
        assert.ok(attempts >= 2, `${attempts} attempts`);
        await roundTrip(running.client);
      });
    }
  });

  it('refuses to start with credentials AWS refuses or the SDK cannot load, never echoing a secret', async t => {
    // With IAM checks on from the first request, moto refuses any unknown access key.
    const strict = await startMoto({ INITIAL_NO_AUTH_ACTION_COUNT: '0' });
    defer(t, () => strict.stop());
    const secret = `secret-${randomBytes(6).toString('hex')}`;
    const refused = writeConfig(undefined, awsOnly(awsBackend(strict.endpoint, 'alias/any')));
    const noProfile = writeConfig(undefined, {});
    const credentialsFile = `${noProfile.dir}/aws-credentials`;
    writeFileSync(
      credentialsFile,
      `[other]\naws_access_key_id = AKIAIOSFODNN7EXAMPLE\naws_secret_access_key = ${secret}\n`,
      { mode: 0o600 },
    );
    writeConfig(
      undefined,
      awsOnly(awsBackend(moto.endpoint, 'alias/any', { credentialsFile, profile: 'broker' })),
      noProfile.dir,
    );
    const brokers = [
      spawnBroker(refused.path, {
        ...strict.env,
        AWS_ACCESS_KEY_ID: 'AKIAIOSFODNN7EXAMPLE',
        AWS_SECRET_ACCESS_KEY: secret,
      }),
      spawnBroker(noProfile.path, { ...process.env, AWS_EC2_METADATA_DISABLED: 'true' }),
    ];
    for (const broker of brokers) defer(t, () => broker.stop('SIGKILL'));
    assert.deepEqual(await Promise.all(brokers.map(broker => broker.exited)), [1, 1]);
    const [refusedOutput, noProfileOutput] = brokers.map(
      broker => broker.text.join('\n') + JSON.stringify(broker.logs),
    );
    assert.match(
      refusedOutput ?? '',
      /BACKEND_AUTH_FAILED: backend aws: AWS KMS refused the broker's credentials \(HTTP_403\)/,
    );
    assert.match(
      noProfileOutput ?? '',
      new RegExp(
        `BACKEND_AUTH_FAILED: backend aws: no AWS credentials could be loaded from profile broker of ${credentialsFile}`,
      ),
    );
    for (const output of [refusedOutput, noProfileOutput]) assert.ok(!(output ?? '').includes(secret));
  });

  describe('wrap: all with SoftHSM', () => {
    let hsmToken: SoftHsmToken;
    before(() => {
      hsmToken = createToken();
    });
    after(() => hsmToken.remove());

    it('keeps reading and writing while moto is stopped mid-traffic', async t => {
      const own = await startMoto();
      defer(t, () => own.stop());
      const key = await createAliasedKey(own.kms, uniqueAlias('all'));
      const running = await serve(
        t,
        { ...own.env, SOFTHSM2_CONF: hsmToken.conf },
        {
          // Attempts short enough that a hanging AWS leaves the deadline's rest to the HSM.
          backends: [
            awsBackend(own.endpoint, key.alias, { requestTimeoutMs: 300 }),
            pkcs11Backend(hsmToken, { keyLabel: 'kek-aws' }),
          ],
          failover: { order: ['aws', 'hsm'], wrap: 'all', hysteresisMs: 1000 },
          health: { probeIntervalMs: 200, openCooldownMs: 500 },
        },
      );
      const written: Sealed[] = [];
      for (let i = 0; i < 10; i++) written.push(await roundTrip(running.client));
      for (const sealed of written) assert.deepEqual(wrapsOf(sealed), ['aws', 'hsm']);

      // Traffic: reads of everything written so far and new writes, while moto goes away.
      const failures: string[] = [];
      let stopped = false;
      const traffic = (async () => {
        for (let i = 0; i < 400 && !(stopped && written.length >= 40); i++) {
          try {
            const target = written[i % written.length] as Sealed;
            assert.deepEqual(await decryptOne(running.client, target), target.seed);
            written.push(await encryptOne(running.client));
          } catch (error) {
            failures.push(String(error));
          }
        }
      })();
      await until(
        () => Promise.resolve(written.length),
        count => count >= 15,
        'traffic before the outage',
      );
      const mark = running.broker.logs.length;
      await own.stop();
      stopped = true;
      await traffic;
      assert.deepEqual(failures, [], 'no read or write failed while AWS KMS was down');
      const thin = written.filter(sealed => wrapsOf(sealed).join() === 'hsm');
      t.diagnostic(`${written.length} envelopes, ${thin.length} written while moto was down`);
      assert.ok(thin.length > 0, 'writes went on with the HSM wrap only');
      for (const sealed of written) assert.deepEqual(await decryptOne(running.client, sealed), sealed.seed);
      assert.ok(
        running.broker.logs
          .slice(mark)
          .some(record => record.msg === 'backend unhealthy' && record.backend === 'aws'),
        'the outage was noticed',
      );
    });
  });
});
