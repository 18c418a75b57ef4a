// The broker core's Decrypt on in-memory backends: it routes by the envelope, tries wraps in
// a useful order, refuses what is not ours, and never waits on admin work or on a slow
// listing beyond its own deadline.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { bindingFor, encodeEnvelope, headerAad, WRAP_ANNOTATION_SUFFIX } from '../../src/broker/envelope.ts';
import { startDeadline } from '../../src/deadline.ts';
import { startCore, withCore, type Core } from '../helpers/core-broker.ts';
import type { MemoryBackend } from '../helpers/memory-backend.ts';
import { brokerError } from './expect-error.ts';

const uid = 'unit';

/** A ciphertext wrapped by `backend` under `version`, as another broker would have written it. */
async function sealedElsewhere(backend: MemoryBackend, version: string, seed: Buffer): Promise<Buffer> {
  const aad = headerAad({ backend: backend.name, keyVersion: version, mechanism: backend.mechanism });
  const deadline = startDeadline(5000);
  try {
    return encodeEnvelope(aad, await backend.wrap({ plaintext: seed, keyVersion: version, aad, deadline }));
  } finally {
    deadline.dispose();
  }
}

function backendOf(core: Core, name: string): MemoryBackend {
  const backend = core.backends.get(name);
  assert.ok(backend !== undefined);
  return backend;
}

describe('broker core: Decrypt of a version the broker does not know yet', () => {
  it('answers within its own deadline while the listing is slow, and a retry finds the version', async () => {
    await withCore({}, async core => {
      const hsm = backendOf(core, 'hsm');
      const seed = randomBytes(32);
      const version = hsm.addVersion().version; // rotated by another broker
      const ciphertext = await sealedElsewhere(hsm, version, seed);
      const listingMs = 1500;
      hsm.delay('listVersions', listingMs);
      const { keyId } = core.broker.kms.status();
      const started = performance.now();
      await assert.rejects(
        core.broker.kms.decrypt({ ciphertext, keyId, annotations: {} }, { uid, deadline: Date.now() + 300 }),
        brokerError('DEADLINE_EXCEEDED'),
      );
      assert.ok(
        performance.now() - started < listingMs,
        'the Decrypt waited for the listing instead of its own deadline',
      );
      // A retry shares the listing in flight, and is answered when it lands.
      assert.deepEqual(
        await core.broker.kms.decrypt(
          { ciphertext, keyId, annotations: {} },
          { uid, deadline: Date.now() + 10000 },
        ),
        seed,
      );
      assert.equal(hsm.calls.listVersions, 2, 'one listing at start, one for both Decrypts');
      // The version is adopted into the key set in the background.
      await core.broker.admin.restore('hsm', version);
    });
  });

  it('does not wait behind an admin change in progress', async () => {
    await withCore({}, async core => {
      const hsm = backendOf(core, 'hsm');
      const sealed = await core.broker.kms.encrypt(randomBytes(32), { uid });
      const other = await sealedElsewhere(hsm, hsm.addVersion().version, randomBytes(32));
      hsm.delay('createVersion', 2000);
      const rotation = core.broker.admin.rotate('hsm');
      const deadline = () => Date.now() + 1000;
      // A known version and a new one both answer while the rotation still waits on the service.
      await core.broker.kms.decrypt(sealed, { uid, deadline: deadline() });
      await core.broker.kms.decrypt(
        { ciphertext: other, keyId: sealed.keyId, annotations: {} },
        { uid, deadline: deadline() },
      );
      assert.equal(hsm.calls.createVersion, 1);
      await rotation;
    });
  });

  it('refuses at once a version a fresh listing did not show, without listing again', async () => {
    await withCore({}, async core => {
      const hsm = backendOf(core, 'hsm');
      const ghost = hsm.addVersion().version;
      const ciphertext = await sealedElsewhere(hsm, ghost, randomBytes(32));
      hsm.deleteVersion(ghost);
      const { keyId } = core.broker.kms.status();
      for (let i = 0; i < 5; i++) {
        await assert.rejects(
          core.broker.kms.decrypt({ ciphertext, keyId, annotations: {} }, { uid }),
          brokerError('UNKNOWN_KEY_VERSION', ghost),
        );
      }
      assert.equal(hsm.calls.listVersions, 2, 'one listing at start, one for five Decrypts');
    });
  });
});

describe('broker core: Decrypt across wraps', () => {
  it('reads through the other wrap when the first backend is down', async () => {
    await withCore({ names: ['hsm', 'vault'], wrap: 'all' }, async core => {
      const seed = randomBytes(32);
      const sealed = await core.broker.kms.encrypt(seed, { uid });
      assert.deepEqual(Object.keys(sealed.annotations), [`vault${WRAP_ANNOTATION_SUFFIX}`]);
      backendOf(core, 'hsm').failAll();
      assert.deepEqual(await core.broker.kms.decrypt(sealed, { uid }), seed);
    });
  });

  it('tries the healthy backend first once a probe has opened the other one’s breaker', async () => {
    await withCore({ names: ['hsm', 'vault'], wrap: 'all' }, async core => {
      const sealed = await core.broker.kms.encrypt(randomBytes(32), { uid });
      const hsm = backendOf(core, 'hsm');
      hsm.failAll();
      await core.broker.probeNow();
      const unwraps = hsm.calls.unwrap;
      await core.broker.kms.decrypt(sealed, { uid });
      assert.equal(hsm.calls.unwrap, unwraps, 'the open backend was tried before the healthy one');
    });
  });

  it('refuses a wrap moved into the annotation of another backend', async () => {
    await withCore({ names: ['hsm', 'vault'], wrap: 'all' }, async core => {
      const sealed = await core.broker.kms.encrypt(randomBytes(32), { uid });
      const annotations = {
        [`hsm${WRAP_ANNOTATION_SUFFIX}`]: sealed.annotations[`vault${WRAP_ANNOTATION_SUFFIX}`] as Buffer,
      };
      await assert.rejects(
        core.broker.kms.decrypt({ ...sealed, annotations }, { uid }),
        brokerError('INVALID_CIPHERTEXT', 'another backend'),
      );
    });
  });

  it('refuses a tampered wrap as INVALID_CIPHERTEXT, and one of an unknown backend as UNKNOWN_BACKEND', async () => {
    await withCore({}, async core => {
      const sealed = await core.broker.kms.encrypt(randomBytes(32), { uid });
      const tampered = Buffer.from(sealed.ciphertext);
      tampered[tampered.length - 1] = (tampered[tampered.length - 1] ?? 0) ^ 1;
      await assert.rejects(
        core.broker.kms.decrypt({ ...sealed, ciphertext: tampered }, { uid }),
        brokerError('INVALID_CIPHERTEXT'),
      );
      const stranger = await startCore({ names: ['elsewhere'] });
      const foreign = await stranger.broker.kms.encrypt(randomBytes(32), { uid });
      await stranger.close();
      await assert.rejects(
        core.broker.kms.decrypt({ ...sealed, ciphertext: foreign.ciphertext }, { uid }),
        brokerError('UNKNOWN_BACKEND', 'elsewhere'),
      );
    });
  });

  it('refuses a wrap whose backend yields another seed than its envelope committed to', async () => {
    await withCore({}, async core => {
      const hsm = backendOf(core, 'hsm');
      // A wrap of seed B under a header that commits to seed A: what a tampering backend returns.
      const aad = headerAad({
        backend: 'hsm',
        keyVersion: '1',
        mechanism: hsm.mechanism,
        binding: bindingFor(randomBytes(32)),
      });
      const deadline = startDeadline(5000);
      const wrapped = await hsm.wrap({ plaintext: randomBytes(32), keyVersion: '1', aad, deadline });
      deadline.dispose();
      const { keyId } = core.broker.kms.status();
      await assert.rejects(
        core.broker.kms.decrypt(
          { ciphertext: encodeEnvelope(aad, wrapped), keyId, annotations: {} },
          { uid },
        ),
        brokerError('INVALID_CIPHERTEXT', 'does not commit to'),
      );
    });
  });

  it('decrypts the wraps of a KMS v1 wrap set, in any order', async () => {
    await withCore({ names: ['hsm', 'vault'], wrap: 'all' }, async core => {
      const seed = randomBytes(32);
      const sealed = await core.broker.kms.encrypt(seed, { uid });
      const wraps = [sealed.ciphertext, ...Object.values(sealed.annotations)];
      backendOf(core, 'hsm').failAll();
      assert.deepEqual(await core.broker.kms.decryptWraps([...wraps].reverse(), { uid }), seed);
      await assert.rejects(core.broker.kms.decryptWraps([], { uid }), brokerError('INVALID_CIPHERTEXT'));
    });
  });
});
