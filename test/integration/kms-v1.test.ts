// KMS v1beta1 on the same socket as v2, over the same backends: Version, Encrypt, Decrypt;
// every wrap travels inside the v1 ciphertext; the service can be switched off.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { loadService } from '../../src/grpc/proto.ts';
import { decodeEnvelope } from '../../src/broker/envelope.ts';
import { decodeWrapSet } from '../../src/grpc/wrap-set.ts';
import { startBrokerProcess, type BrokerProcess } from '../helpers/broker-process.ts';
import { addToken, createToken, type SoftHsmToken } from '../helpers/softhsm.ts';
import { escrowBackend, pkcs11Backend, writeConfig } from '../helpers/config.ts';
import { formatPublicKeyFile, generateEscrowKeyPair } from '../../src/escrow/key-files.ts';
import { expectGrpcError, rawUnaryCall } from '../helpers/grpc.ts';
import { writeFileSync } from 'node:fs';

type Call = (
  request: object,
  options: grpc.CallOptions,
  callback: (error: grpc.ServiceError | null, response: unknown) => void,
) => void;

function v1Client(socket: string) {
  const Client = grpc.makeGenericClientConstructor(
    loadService('kms-v1beta1.proto', 'v1beta1.KeyManagementService'),
    'KeyManagementService',
  );
  const client = new Client(`unix://${socket}`, grpc.credentials.createInsecure());
  const call = <T>(method: string, request: object): Promise<T> =>
    new Promise((resolve, reject) =>
      ((client as unknown as Record<string, Call>)[method] as Call).call(
        client,
        request,
        { deadline: Date.now() + 3000 },
        (error, response) => (error ? reject(error) : resolve(response as T)),
      ),
    );
  return {
    version: (version = 'v1beta1') => call<{ version: string; runtime_name: string }>('Version', { version }),
    encrypt: (plain: Buffer, version = 'v1beta1') => call<{ cipher: Buffer }>('Encrypt', { version, plain }),
    decrypt: (cipher: Buffer) => call<{ plain: Buffer }>('Decrypt', { version: 'v1beta1', cipher }),
    close: () => client.close(),
  };
}

describe('KMS v1beta1 beside v2', () => {
  let token: SoftHsmToken;
  let broker: BrokerProcess;
  let client: ReturnType<typeof v1Client>;
  let socket: string;

  before(async () => {
    token = createToken();
    addToken(token, 'second', '13579');
    writeFileSync(`${token.dir}/second-pin`, '13579');
    writeFileSync(`${token.dir}/escrow.pem`, formatPublicKeyFile(generateEscrowKeyPair().publicKey));
    const config = writeConfig(token, {
      backends: [
        pkcs11Backend(token),
        pkcs11Backend(token, { name: 'hsm2', tokenLabel: 'second', pinFile: `${token.dir}/second-pin` }),
        escrowBackend(`${token.dir}/escrow.pem`),
      ],
      failover: { order: ['hsm', 'hsm2', 'escrow'], wrap: 'all' },
    });
    socket = config.socket;
    broker = await startBrokerProcess(config.path, token.env);
    client = v1Client(socket);
  });
  after(async () => {
    client.close();
    await broker.stop();
    token.remove();
  });

  it('answers Version with v1beta1, as the apiserver requires', async () => {
    const version = await client.version();
    assert.equal(version.version, 'v1beta1');
    assert.equal(version.runtime_name, 'kms-broker');
  });

  it('round-trips a DEK, carrying every backend wrap (the escrow wrap too) inside the v1 ciphertext', async () => {
    const dek = randomBytes(32);
    const { cipher } = await client.encrypt(dek);
    const wraps = decodeWrapSet(cipher).map(wrap => decodeEnvelope(wrap).header.backend);
    assert.deepEqual(wraps, ['hsm', 'hsm2', 'escrow']);
    assert.deepEqual((await client.decrypt(cipher)).plain, dek);
  });

  it('refuses another API version, garbage and oversized DEKs, and keeps serving', async () => {
    await expectGrpcError(
      client.encrypt(randomBytes(32), 'v2'),
      grpc.status.INVALID_ARGUMENT,
      /unsupported KMS API version/,
    );
    await expectGrpcError(client.version('v2'), grpc.status.INVALID_ARGUMENT, /unsupported KMS API version/);
    await expectGrpcError(
      rawUnaryCall(socket, '/v1beta1.KeyManagementService/Decrypt', Buffer.from([0x12, 0x64, 0x01])),
      grpc.status.INVALID_ARGUMENT,
      /not a valid protobuf message/,
    );
    await expectGrpcError(client.decrypt(randomBytes(80)), grpc.status.INVALID_ARGUMENT);
    await expectGrpcError(client.encrypt(randomBytes(129)), grpc.status.INVALID_ARGUMENT, /at most 128/);
    assert.equal((await client.version()).version, 'v1beta1');
  });

  it('is not served when switched off in the config', async () => {
    const other = createToken();
    try {
      const config = writeConfig(other, { kmsV1: { enabled: false } });
      const running = await startBrokerProcess(config.path, other.env);
      const off = v1Client(config.socket);
      try {
        await expectGrpcError(off.version(), grpc.status.UNIMPLEMENTED);
      } finally {
        off.close();
        await running.stop();
      }
    } finally {
      other.remove();
    }
  });
});
