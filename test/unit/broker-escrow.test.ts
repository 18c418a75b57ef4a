// The escrow backend as the broker core uses it: a write-only member of any failover order.
// Its wrap goes beside every seed in an annotation and opens offline with the private key;
// it never writes the ciphertext, never makes an Encrypt succeed, is never tried on Decrypt,
// and a seed that went out without it is reported like any thin seed.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { EscrowBackend } from '../../src/backends/escrow/escrow-backend.ts';
import type { KekBackend } from '../../src/backends/kek.ts';
import { Broker } from '../../src/broker/broker.ts';
import { decodeEnvelope, WRAP_ANNOTATION_SUFFIX } from '../../src/broker/envelope.ts';
import { validateConfig } from '../../src/config/load.ts';
import { BrokerError } from '../../src/errors.ts';
import { ESCROW_MECHANISM, openFromEscrow } from '../../src/escrow/hybrid-wrap.ts';
import {
  fingerprint,
  formatPublicKeyFile,
  generateEscrowKeyPair,
  type EscrowPrivateKey,
  type EscrowPublicKey,
} from '../../src/escrow/key-files.ts';
import { Metrics } from '../../src/metrics/metrics.ts';
import { memoryBackendEntry, memoryStateStore } from '../helpers/core-broker.ts';
import { MemoryBackend } from '../helpers/memory-backend.ts';
import { memoryLog } from '../helpers/memory-log.ts';
import { brokerError } from './expect-error.ts';

const ESCROW_ANNOTATION = `escrow${WRAP_ANNOTATION_SUFFIX}`;
const PUBLIC_KEY_FILE = '/etc/kms-broker/escrow-public.pem';

interface EscrowCore {
  readonly broker: Broker;
  readonly hsm: MemoryBackend;
  readonly vault: MemoryBackend;
  readonly escrow: EscrowBackend;
  readonly privateKey: EscrowPrivateKey;
  readonly publicKey: EscrowPublicKey;
  /** How often the broker asked the escrow to unwrap. */
  readonly unwrapCalls: () => number;
}

async function withEscrowCore(
  wrap: 'all' | 'first',
  test: (core: EscrowCore) => Promise<void>,
): Promise<void> {
  const { publicKey, privateKey } = generateEscrowKeyPair();
  const pem = Buffer.from(formatPublicKeyFile(publicKey));
  const config = validateConfig({
    socket: '/run/kms-broker-unit/kms.sock',
    state: { path: '/run/kms-broker-unit/state.json' },
    admin: { enabled: false },
    health: { probeIntervalMs: 3600000, failureThreshold: 1, openCooldownMs: 600000 },
    backends: [
      ...['hsm', 'vault'].map(memoryBackendEntry),
      { name: 'escrow', type: 'escrow', publicKeyFile: PUBLIC_KEY_FILE },
    ],
    // Listed first on purpose: the escrow must still never be the writer.
    failover: { order: ['escrow', 'hsm', 'vault'], wrap, hysteresisMs: 0 },
  });
  const logger = pino({ level: 'silent' }, memoryLog().stream);
  const escrow = new EscrowBackend(
    { name: 'escrow', type: 'escrow', publicKeyFile: PUBLIC_KEY_FILE },
    {
      readFile: () => pem,
      readSecret: () => {
        throw new Error('an escrow backend reads no secret');
      },
      logger,
    },
  );
  let unwrapCalls = 0;
  const unwrap = escrow.unwrap.bind(escrow);
  escrow.unwrap = () => {
    unwrapCalls++;
    return unwrap();
  };
  const hsm = new MemoryBackend({ name: 'hsm', versions: 1 });
  const vault = new MemoryBackend({ name: 'vault', versions: 1 });
  const backends = new Map<string, KekBackend>([
    ['escrow', escrow],
    ['hsm', hsm],
    ['vault', vault],
  ]);
  const broker = await Broker.start({
    config,
    backends,
    stateStore: memoryStateStore(),
    logger,
    metrics: new Metrics(),
  });
  try {
    await broker.probeNow();
    await test({ broker, hsm, vault, escrow, privateKey, publicKey, unwrapCalls: () => unwrapCalls });
  } finally {
    await broker.close();
  }
}

describe('escrow backend in the broker core', () => {
  for (const wrap of ['all', 'first'] as const) {
    it(`wrap: ${wrap}: every seed gets an escrow wrap in an annotation that opens offline to it`, () =>
      withEscrowCore(wrap, async ({ broker, privateKey }) => {
        const seed = randomBytes(32);
        const result = await broker.kms.encrypt(seed, { uid: 'u1' });
        assert.equal(decodeEnvelope(result.ciphertext).header.backend, 'hsm');
        const expected =
          wrap === 'all'
            ? ['escrow', 'vault'].map(name => `${name}${WRAP_ANNOTATION_SUFFIX}`)
            : [ESCROW_ANNOTATION];
        assert.deepEqual(Object.keys(result.annotations).sort(), expected);
        const escrowWrap = decodeEnvelope(result.annotations[ESCROW_ANNOTATION] as Buffer);
        assert.equal(escrowWrap.header.mechanism, ESCROW_MECHANISM);
        assert.equal(
          escrowWrap.header.keyVersion,
          broker.admin.backends().find(b => b.name === 'escrow')?.writeVersion,
        );
        assert.ok(openFromEscrow(privateKey, escrowWrap.wrapped, escrowWrap.aad).equals(seed));
        assert.equal(broker.kms.status().keyId, result.keyId);
        assert.equal(broker.kms.status().healthz, 'ok');
        assert.ok((await broker.kms.decrypt({ ...result, keyId: result.keyId }, { uid: 'u2' })).equals(seed));
      }));
  }

  it('never tries the escrow on Decrypt, and says so when only escrow wraps are left', () =>
    withEscrowCore('all', async ({ broker, hsm, vault, unwrapCalls }) => {
      const seed = randomBytes(32);
      const result = await broker.kms.encrypt(seed, { uid: 'u1' });
      hsm.fail('unwrap');
      vault.fail('unwrap');
      await assert.rejects(broker.kms.decrypt(result, { uid: 'u2' }), brokerError('BACKEND_UNAVAILABLE'));
      assert.equal(unwrapCalls(), 0);
      await assert.rejects(
        broker.kms.decryptWraps([result.annotations[ESCROW_ANNOTATION] as Buffer], { uid: 'u3' }),
        brokerError('INVALID_CIPHERTEXT', 'only escrow wraps'),
      );
      assert.equal(unwrapCalls(), 0);
    }));

  it('never counts the escrow wrap as an Encrypt success', () =>
    withEscrowCore('all', async ({ broker, hsm, vault }) => {
      hsm.fail('wrap');
      vault.fail('wrap');
      await assert.rejects(
        broker.kms.encrypt(randomBytes(32), { uid: 'u1' }),
        brokerError('BACKEND_UNAVAILABLE'),
      );
    }));

  it('reports a seed that went out without its escrow wrap as thin', () =>
    withEscrowCore('first', async ({ broker, escrow }) => {
      escrow.wrap = () => Promise.reject(new BrokerError('BACKEND_UNAVAILABLE', 'escrow wrap failed'));
      const result = await broker.kms.encrypt(randomBytes(32), { uid: 'u1' });
      assert.deepEqual(result.annotations, {});
      assert.deepEqual(broker.admin.status().underReplicatedKeyIds, [result.keyId]);
    }));

  it('names the escrow key by its fingerprint, and refuses to create a version of it', () =>
    withEscrowCore('first', async ({ broker, publicKey }) => {
      const view = broker.admin.backends().find(backend => backend.name === 'escrow');
      assert.deepEqual(
        [view?.writeVersion, view?.writeOnly, view?.healthy],
        [fingerprint(publicKey), true, true],
      );
      await assert.rejects(broker.admin.rotate('escrow'), brokerError('ESCROW_WRITE_ONLY', 'escrow init'));
    }));
});
