// KMS v2 over a real unix socket against a broker process on a real SoftHSM token.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { status as GrpcStatus } from '@grpc/grpc-js';
import { createKmsV2Client, type KmsV2Client } from '../../src/grpc/kms-v2-client.ts';
import { decodeEnvelope } from '../../src/broker/envelope.ts';
import { startBrokerProcess, type BrokerProcess } from '../helpers/broker-process.ts';
import { writeConfig } from '../helpers/config.ts';
import { createToken, type SoftHsmToken } from '../helpers/softhsm.ts';
import { expectGrpcError, rawUnaryCall } from '../helpers/grpc.ts';
import { headerOf } from '../helpers/envelopes.ts';

describe('KMS v2 on a SoftHSM token', () => {
  let token: SoftHsmToken;
  let broker: BrokerProcess;
  let client: KmsV2Client;
  let socket: string;

  before(async () => {
    token = createToken();
    const config = writeConfig(token);
    socket = config.socket;
    broker = await startBrokerProcess(config.path, token.env);
    client = createKmsV2Client(config.socket);
  });

  after(async () => {
    client.close();
    await broker.stop();
    token.remove();
  });

  it('answers Status with version v2, healthz ok and a key_id the apiserver accepts', async () => {
    const status = await client.status();
    assert.equal(status.version, 'v2');
    assert.equal(status.healthz, 'ok');
    assert.match(status.key_id, /^kbr1-[A-Za-z0-9_-]{43}$/);
  });

  it('round-trips a 32-byte seed, with the same key_id in Status and Encrypt', async () => {
    const seed = randomBytes(32);
    const status = await client.status();
    const encrypted = await client.encrypt(seed);
    assert.equal(encrypted.key_id, status.key_id);
    assert.ok(encrypted.ciphertext.length > 0 && encrypted.ciphertext.length <= 1024);
    assert.ok(!encrypted.ciphertext.includes(seed), 'the seed must not appear in the ciphertext');
    assert.deepEqual(encrypted.annotations, {});
    const decrypted = await client.decrypt({ ciphertext: encrypted.ciphertext, key_id: encrypted.key_id });
    assert.deepEqual(decrypted.plaintext, seed);
  });

  it('returns a distinct ciphertext for every Encrypt, even of the same plaintext', async () => {
    const seed = randomBytes(32);
    const first = await client.encrypt(seed);
    const second = await client.encrypt(seed);
    assert.notDeepEqual(first.ciphertext, second.ciphertext);
  });

  it('records backend, key version and mechanism in the envelope', async () => {
    const encrypted = await client.encrypt(randomBytes(32));
    const envelope = decodeEnvelope(encrypted.ciphertext);
    assert.deepEqual(headerOf(encrypted.ciphertext), {
      backend: 'hsm',
      keyVersion: '1',
      mechanism: 'aes-gcm',
    });
    assert.equal(envelope.wrapped.length, 12 + 32 + 16);
  });

  it('accepts plaintexts of 1 and 128 bytes and refuses empty and 129-byte ones', async () => {
    for (const size of [1, 128]) {
      const plaintext = randomBytes(size);
      const encrypted = await client.encrypt(plaintext);
      assert.deepEqual(
        (await client.decrypt({ ciphertext: encrypted.ciphertext, key_id: encrypted.key_id })).plaintext,
        plaintext,
      );
    }
    await expectGrpcError(client.encrypt(Buffer.alloc(0)), GrpcStatus.INVALID_ARGUMENT, /plaintext is empty/);
    await expectGrpcError(client.encrypt(randomBytes(129)), GrpcStatus.INVALID_ARGUMENT, /at most 128/);
  });

  it('refuses an over-long uid and messages beyond 64 KiB, and keeps serving', async () => {
    await expectGrpcError(
      client.encrypt(randomBytes(32), 'u'.repeat(257)),
      GrpcStatus.INVALID_ARGUMENT,
      /uid exceeds 256/,
    );
    await expectGrpcError(client.encrypt(randomBytes(100 * 1024)), GrpcStatus.RESOURCE_EXHAUSTED);
    assert.equal((await client.status()).healthz, 'ok');
  });

  it('answers a request that is not a valid message with INVALID_ARGUMENT, not INTERNAL', async () => {
    // Field 1 (plaintext / ciphertext) says 100 bytes follow; two do.
    const truncated = Buffer.from([0x0a, 0x64, 0x01, 0x02]);
    for (const method of ['Encrypt', 'Decrypt']) {
      await expectGrpcError(
        rawUnaryCall(socket, `/v2.KeyManagementService/${method}`, truncated),
        GrpcStatus.INVALID_ARGUMENT,
        /INVALID_REQUEST: the request is not a valid protobuf message/,
        method,
      );
    }
    assert.equal((await client.status()).healthz, 'ok');
  });

  it('refuses Decrypt requests that break the apiserver limits', async () => {
    const good = await client.encrypt(randomBytes(32));
    await expectGrpcError(
      client.decrypt({ ciphertext: Buffer.alloc(0), key_id: good.key_id }),
      GrpcStatus.INVALID_ARGUMENT,
      /ciphertext is empty/,
    );
    await expectGrpcError(
      client.decrypt({ ciphertext: randomBytes(1025), key_id: good.key_id }),
      GrpcStatus.INVALID_ARGUMENT,
      /at most 1024/,
    );
    await expectGrpcError(
      client.decrypt({ ciphertext: good.ciphertext, key_id: '' }),
      GrpcStatus.INVALID_ARGUMENT,
      /key_id is empty/,
    );
    await expectGrpcError(
      client.decrypt({ ciphertext: good.ciphertext, key_id: 'k'.repeat(1025) }),
      GrpcStatus.INVALID_ARGUMENT,
      /key_id exceeds/,
    );
    await expectGrpcError(
      client.decrypt({
        ciphertext: good.ciphertext,
        key_id: good.key_id,
        annotations: { panda: Buffer.from('x') },
      }),
      GrpcStatus.INVALID_ARGUMENT,
      /fully qualified domain name/,
    );
    await expectGrpcError(
      client.decrypt({
        ciphertext: good.ciphertext,
        key_id: good.key_id,
        annotations: { 'big.example.com': Buffer.alloc(32 * 1024) },
      }),
      GrpcStatus.INVALID_ARGUMENT,
      /annotations total/,
    );
    const many = Object.fromEntries(
      Array.from({ length: 33 }, (_, i) => [`a${i}.example.com`, Buffer.from('x')]),
    );
    await expectGrpcError(
      client.decrypt({ ciphertext: good.ciphertext, key_id: good.key_id, annotations: many }),
      GrpcStatus.INVALID_ARGUMENT,
      /more than 32/,
    );
  });

  it('refuses a key_id another plugin issued, without trying to decrypt', async () => {
    const good = await client.encrypt(randomBytes(32));
    await expectGrpcError(
      client.decrypt({ ciphertext: good.ciphertext, key_id: 'kms-test' }),
      GrpcStatus.INVALID_ARGUMENT,
      /not issued by kms-broker/,
    );
  });

  it('answers garbage, truncated, oversized, foreign and tampered ciphertexts with INVALID_ARGUMENT and keeps serving', async () => {
    const good = await client.encrypt(randomBytes(32));
    const tamperedTag = Buffer.from(good.ciphertext);
    tamperedTag[tamperedTag.length - 1] = (tamperedTag[tamperedTag.length - 1] ?? 0) ^ 0x01;
    const tamperedHeader = Buffer.from(good.ciphertext);
    // Flip a byte inside the header's key_version ("1" → "3"): the AAD no longer matches.
    const versionAt = tamperedHeader.indexOf(Buffer.from([0x12, 0x01, 0x31]));
    assert.ok(versionAt > 0);
    tamperedHeader[versionAt + 2] = 0x33;
    const cases: [string, Buffer][] = [
      ['garbage', randomBytes(64)],
      ['truncated', good.ciphertext.subarray(0, good.ciphertext.length - 10)],
      ['magic only', good.ciphertext.subarray(0, 4)],
      ['oversized', Buffer.concat([good.ciphertext, randomBytes(1024)])],
      ['foreign (Vault Transit)', Buffer.from('vault:v1:' + randomBytes(48).toString('base64'))],
      ['tampered tag', tamperedTag],
    ];
    for (const [name, ciphertext] of cases) {
      await expectGrpcError(
        client.decrypt({ ciphertext, key_id: good.key_id }),
        GrpcStatus.INVALID_ARGUMENT,
        undefined,
        name,
      );
    }
    // A header naming a version the token lacks is not the caller's typo but our data: precondition.
    await expectGrpcError(
      client.decrypt({ ciphertext: tamperedHeader, key_id: good.key_id }),
      GrpcStatus.FAILED_PRECONDITION,
      /no key version '3'/,
    );
    const status = await client.status();
    assert.equal(status.healthz, 'ok');
    assert.deepEqual(
      (await client.decrypt({ ciphertext: good.ciphertext, key_id: good.key_id })).plaintext.length,
      32,
    );
  });

  it('decrypts 1,000 concurrent requests, each to its own plaintext', async () => {
    const seeds = Array.from({ length: 50 }, () => randomBytes(32));
    const encrypted = await Promise.all(seeds.map(seed => client.encrypt(seed)));
    const results = await Promise.all(
      Array.from({ length: 1000 }, (_, i) => {
        const which = i % seeds.length;
        const { ciphertext, key_id } = encrypted[which] as (typeof encrypted)[number];
        return client
          .decrypt({ ciphertext, key_id })
          .then(response => ({ which, plaintext: response.plaintext }));
      }),
    );
    for (const { which, plaintext } of results) assert.deepEqual(plaintext, seeds[which]);
  });

  it('logs every call with the apiserver uid and never the plaintext', async () => {
    const seed = randomBytes(32);
    const uid = 'test-uid-' + randomBytes(4).toString('hex');
    await client.encrypt(seed, uid);
    const record = await broker.waitForLog(line => line.uid === uid);
    assert.equal(record.op, 'encrypt');
    const everything = JSON.stringify(broker.logs);
    assert.ok(!everything.includes(seed.toString('base64')) && !everything.includes(seed.toString('hex')));
  });
});
