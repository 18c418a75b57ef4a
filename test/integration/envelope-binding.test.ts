// The wraps of one envelope are bound together: with wrap: all over two SoftHSM tokens, a
// wrap moved in from another envelope is refused before any unwrap, so one stored object can
// never yield two different seeds; and envelopes of the first format, written before the
// binding existed, still decrypt.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { status as GrpcStatus } from '@grpc/grpc-js';
import { Pkcs11Backend } from '../../src/backends/pkcs11/pkcs11-backend.ts';
import type { Pkcs11BackendConfig } from '../../src/backends/pkcs11/pkcs11-schema.ts';
import {
  BOUND_ENVELOPE_MAGIC,
  decodeEnvelope,
  encodeEnvelope,
  headerAad,
  WRAP_ANNOTATION_SUFFIX,
} from '../../src/broker/envelope.ts';
import { validateConfig } from '../../src/config/load.ts';
import { startDeadline } from '../../src/deadline.ts';
import { createKmsV2Client, type KmsV2Client } from '../../src/grpc/kms-v2-client.ts';
import { createLogger } from '../../src/log.ts';
import { readSecret } from '../../src/secrets.ts';
import { startBrokerProcess, type BrokerProcess } from '../helpers/broker-process.ts';
import { pkcs11Backend, writeConfig } from '../helpers/config.ts';
import { expectGrpcError } from '../helpers/grpc.ts';
import { addToken, createToken, type SoftHsmToken } from '../helpers/softhsm.ts';

const SECOND = `hsm2${WRAP_ANNOTATION_SUFFIX}`;

describe('envelope binding', () => {
  let token: SoftHsmToken;
  let broker: BrokerProcess;
  let client: KmsV2Client;
  let backends: Record<string, unknown>[];

  before(async () => {
    token = createToken();
    addToken(token, 'second', '13579');
    writeFileSync(`${token.dir}/second-pin`, '13579');
    backends = [
      pkcs11Backend(token),
      pkcs11Backend(token, { name: 'hsm2', tokenLabel: 'second', pinFile: `${token.dir}/second-pin` }),
    ];
    const config = writeConfig(token, { backends, failover: { order: ['hsm', 'hsm2'], wrap: 'all' } });
    broker = await startBrokerProcess(config.path, token.env);
    client = createKmsV2Client(config.socket);
  });

  after(async () => {
    client.close();
    await broker.stop();
    token.remove();
  });

  it('writes every wrap in the bound format, all naming the same envelope', async () => {
    const sealed = await client.encrypt(randomBytes(32));
    const wraps = [sealed.ciphertext, sealed.annotations[SECOND] as Buffer].map(decodeEnvelope);
    for (const wrap of wraps) assert.ok(wrap.aad.subarray(0, 4).equals(BOUND_ENVELOPE_MAGIC));
    const [first, second] = wraps.map(wrap => wrap.header.binding);
    assert.ok(first !== undefined && second !== undefined);
    assert.deepEqual(first, second);
    assert.ok(sealed.ciphertext.length <= 1024);
  });

  it('refuses a wrap spliced in from another envelope, whichever side is moved, and keeps serving', async () => {
    const seedA = randomBytes(32);
    const a = await client.encrypt(seedA);
    const b = await client.encrypt(randomBytes(32));
    const splices = [
      { ciphertext: a.ciphertext, annotations: { [SECOND]: b.annotations[SECOND] as Buffer } },
      { ciphertext: b.ciphertext, annotations: { [SECOND]: a.annotations[SECOND] as Buffer } },
    ];
    for (const [index, splice] of splices.entries()) {
      await expectGrpcError(
        client.decrypt({ ...splice, key_id: a.key_id }),
        GrpcStatus.INVALID_ARGUMENT,
        /INVALID_CIPHERTEXT: .*belongs to another envelope/,
        `splice ${index}`,
      );
    }
    const whole = await client.decrypt({
      ciphertext: a.ciphertext,
      annotations: a.annotations,
      key_id: a.key_id,
    });
    assert.deepEqual(whole.plaintext, seedA);
  });

  it('still decrypts envelopes of the first format, and refuses one spliced into a bound envelope', async () => {
    // Wraps written the way brokers wrote them before the binding: the same keys, the
    // first-format header, through the backend itself.
    const seed = randomBytes(32);
    const legacy = await Promise.all(
      backends.map(async settings => {
        const config = validateConfig({
          socket: '/run/unused.sock',
          state: { path: '/run/unused.json' },
          backends: [settings],
          failover: { order: [settings.name as string] },
        }).backends[0] as Pkcs11BackendConfig;
        process.env.SOFTHSM2_CONF = token.conf;
        const backend = new Pkcs11Backend(config, { readSecret, logger: createLogger('warn') });
        await backend.open();
        const deadline = startDeadline(5000);
        try {
          const aad = headerAad({ backend: backend.name, keyVersion: '1', mechanism: backend.mechanism });
          return encodeEnvelope(aad, await backend.wrap({ plaintext: seed, keyVersion: '1', aad, deadline }));
        } finally {
          deadline.dispose();
          await backend.close();
        }
      }),
    );
    const [primary, second] = legacy as [Buffer, Buffer];
    assert.equal(decodeEnvelope(primary).header.binding, undefined);
    const { key_id: keyId } = await client.status();
    const read = await client.decrypt({
      ciphertext: primary,
      annotations: { [SECOND]: second },
      key_id: keyId,
    });
    assert.deepEqual(read.plaintext, seed);

    const bound = await client.encrypt(randomBytes(32));
    await expectGrpcError(
      client.decrypt({ ciphertext: bound.ciphertext, annotations: { [SECOND]: second }, key_id: keyId }),
      GrpcStatus.INVALID_ARGUMENT,
      /belongs to another envelope/,
    );
  });
});
