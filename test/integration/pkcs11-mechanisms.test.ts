// Every wrap mechanism of the PKCS#11 backend against a real SoftHSM token: round trip,
// rotation, restart and tampering for aes-gcm, aes-kwp and rsa-oaep (SHA-1, the hash
// SoftHSM takes); envelopes of each mechanism still read after the config names another;
// keys an HSM administrator imported are used only when they cannot leave the token; and a
// mechanism the token lacks, or a hash it refuses, is named with its fix.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import type graphene from 'graphene-pk11';
import { Pkcs11Backend } from '../../src/backends/pkcs11/pkcs11-backend.ts';
import type { Pkcs11BackendConfig } from '../../src/backends/pkcs11/pkcs11-schema.ts';
import { loadModule, type LoadedModule } from '../../src/backends/pkcs11/module-cache.ts';
import { findSlot, openLoggedIn } from '../../src/backends/pkcs11/token-session.ts';
import { validateConfig } from '../../src/config/load.ts';
import { startDeadline } from '../../src/deadline.ts';
import { createLogger } from '../../src/log.ts';
import { readSecret } from '../../src/secrets.ts';
import { pkcs11Backend } from '../helpers/config.ts';
import { memoryLog } from '../helpers/memory-log.ts';
import { importAesKey } from '../helpers/pkcs11-keys.ts';
import { createToken, SOFTHSM_MODULE, type SoftHsmToken } from '../helpers/softhsm.ts';

const deadline = () => startDeadline(30_000);
const HEADER = Buffer.from('envelope header');

interface Wrapped {
  readonly wrapped: Buffer;
  readonly keyVersion: string;
  readonly mechanism: string;
  readonly seed: Buffer;
}

describe('PKCS#11 wrap mechanisms on SoftHSM', () => {
  let token: SoftHsmToken;
  const log = memoryLog();
  const open = new Set<Pkcs11Backend>();

  function configFor(overrides: Record<string, unknown>): Pkcs11BackendConfig {
    return validateConfig({
      socket: '/tmp/unused.sock',
      state: { path: '/tmp/unused.json' },
      backends: [pkcs11Backend(token, overrides)],
      failover: { order: ['hsm'] },
    }).backends[0] as Pkcs11BackendConfig;
  }

  async function backendFor(overrides: Record<string, unknown>): Promise<Pkcs11Backend> {
    const backend = new Pkcs11Backend(configFor(overrides), {
      readSecret,
      logger: createLogger('info', log.stream),
    });
    await backend.open();
    open.add(backend);
    return backend;
  }

  async function closed(backend: Pkcs11Backend): Promise<void> {
    open.delete(backend);
    await backend.close();
  }

  async function wrap(backend: Pkcs11Backend, keyVersion: string): Promise<Wrapped> {
    const seed = randomBytes(32);
    const wrapped = await backend.wrap({ plaintext: seed, keyVersion, aad: HEADER, deadline: deadline() });
    return { wrapped, keyVersion, mechanism: backend.mechanism, seed };
  }

  function unwrap(backend: Pkcs11Backend, wrap: Wrapped, changes: Partial<Wrapped> & { aad?: Buffer } = {}) {
    return backend.unwrap({ ...wrap, aad: HEADER, ...changes, deadline: deadline() });
  }

  function flipped(bytes: Buffer, at: number): Buffer {
    const copy = Buffer.from(bytes);
    copy[at] = (copy[at] as number) ^ 0x01;
    return copy;
  }

  before(() => {
    token = createToken();
    process.env.SOFTHSM2_CONF = token.conf;
  });

  after(async () => {
    for (const backend of open) await backend.close();
    token.remove();
  });

  const MECHANISMS = [
    { settings: { mechanism: 'aes-gcm' }, recorded: 'aes-gcm', wrappedBytes: 12 + 32 + 16 },
    { settings: { mechanism: 'aes-kwp' }, recorded: 'aes-kwp', wrappedBytes: 64 + 8 },
    { settings: { mechanism: 'rsa-oaep', oaepHash: 'sha1' }, recorded: 'rsa-oaep-sha1', wrappedBytes: 384 },
  ] as const;

  for (const { settings, recorded, wrappedBytes } of MECHANISMS) {
    it(`${recorded}: round trip, tampering, another header, rotation and restart`, async () => {
      const keyLabel = `kek-${recorded}`;
      let backend = await backendFor({ ...settings, keyLabel });
      assert.equal(backend.mechanism, recorded);
      const v1 = (await backend.createVersion(deadline())).version;
      const first = await wrap(backend, v1);
      assert.equal(first.wrapped.length, wrappedBytes);
      assert.deepEqual(await unwrap(backend, first), first.seed);

      for (const at of [0, first.wrapped.length - 1]) {
        await assert.rejects(unwrap(backend, first, { wrapped: flipped(first.wrapped, at) }), {
          code: 'INVALID_CIPHERTEXT',
        });
      }
      await assert.rejects(unwrap(backend, first, { aad: Buffer.from('another envelope') }), {
        code: 'INVALID_CIPHERTEXT',
      });

      const v2 = (await backend.createVersion(deadline())).version;
      assert.equal(v2, String(Number(v1) + 1));
      const second = await wrap(backend, v2);
      assert.ok(!second.wrapped.equals(first.wrapped));
      await assert.rejects(unwrap(backend, first, { keyVersion: v2 }), { code: 'INVALID_CIPHERTEXT' });
      const listed = await backend.listVersions(deadline());
      assert.deepEqual(
        listed.map(info => [info.version, info.writeRefusal]),
        [
          [v1, undefined],
          [v2, undefined],
        ],
      );

      await closed(backend);
      backend = await backendFor({ ...settings, keyLabel });
      assert.deepEqual(await unwrap(backend, first), first.seed);
      assert.deepEqual(await unwrap(backend, second), second.seed);
      await closed(backend);
    });
  }

  it('reads every mechanism it ever wrote with after the config switches, and makes keys per mechanism', async () => {
    const keyLabel = 'kek-switch';
    const written: Wrapped[] = [];
    for (const [index, { settings }] of MECHANISMS.entries()) {
      const backend = await backendFor({ ...settings, keyLabel });
      const listed = await backend.listVersions(deadline());
      // The previous version was made for another mechanism: it cannot write with this one.
      if (index > 0) {
        const previous = listed[listed.length - 1];
        assert.match(
          previous?.writeRefusal ?? '',
          new RegExp(`cannot write with mechanism ${backend.mechanism}`),
        );
        await assert.rejects(wrap(backend, previous?.version ?? ''), { code: 'KEY_MECHANISM_MISMATCH' });
      }
      const version = (await backend.createVersion(deadline())).version;
      assert.equal(version, String(index + 1));
      written.push(await wrap(backend, version));
      await closed(backend);
    }
    for (const { settings } of MECHANISMS) {
      const backend = await backendFor({ ...settings, keyLabel });
      for (const wrapped of written) assert.deepEqual(await unwrap(backend, wrapped), wrapped.seed);
      await closed(backend);
    }
    // A wrap that claims another mechanism than its key serves is refused before the token decrypts.
    const backend = await backendFor({ keyLabel });
    const kwp = written[1] as Wrapped;
    await assert.rejects(unwrap(backend, kwp, { mechanism: 'aes-gcm' }), {
      code: 'INVALID_CIPHERTEXT',
      message: /key version 2 is an AES key for wrap\/unwrap, which cannot open a aes-gcm wrap/,
    });
    await assert.rejects(unwrap(backend, kwp, { mechanism: 'des3-cbc' }), { code: 'INVALID_CIPHERTEXT' });
    await closed(backend);
  });

  it('creates 4096-bit RSA keys when rsaBits says so', async () => {
    const backend = await backendFor({
      mechanism: 'rsa-oaep',
      oaepHash: 'sha1',
      rsaBits: 4096,
      keyLabel: 'kek-rsa4096',
    });
    const wrapped = await wrap(backend, (await backend.createVersion(deadline())).version);
    assert.equal(wrapped.wrapped.length, 512);
    assert.deepEqual(await unwrap(backend, wrapped), wrapped.seed);
    await closed(backend);
  });

  it('names oaepHash: sha1 when the token refuses RSA-OAEP with SHA-256, as SoftHSM does', async () => {
    const backend = await backendFor({ mechanism: 'rsa-oaep', keyLabel: 'kek-sha256' });
    assert.equal(backend.mechanism, 'rsa-oaep');
    const version = (await backend.createVersion(deadline())).version;
    await assert.rejects(wrap(backend, version), {
      code: 'BACKEND_UNAVAILABLE',
      message: /refused RSA-OAEP with SHA256 \(CKR_ARGUMENTS_BAD\); set oaepHash: sha1/,
    });
    await closed(backend);
  });

  it('refuses at open a mechanism the token does not offer', async () => {
    const backend = new Pkcs11Backend(configFor({ mechanism: 'aes-kwp', kwpMechanism: 0x210b }), {
      readSecret,
      logger: createLogger('info', log.stream),
    });
    await assert.rejects(backend.open(), {
      code: 'HSM_MECHANISM_UNSUPPORTED',
      message: /does not offer mechanism aes-kwp \(CK_MECHANISM_TYPE 0x210b/,
    });
  });

  describe('keys an HSM administrator imported', () => {
    let module: LoadedModule;
    let session: graphene.Session;

    before(() => {
      module = loadModule(SOFTHSM_MODULE);
      session = openLoggedIn(findSlot(module.module, configFor({})), configFor({}), readSecret);
    });

    after(() => {
      session.close();
      module.release();
    });

    const importAes = (label: string, safe: boolean) => importAesKey(session, label, safe);

    it('adopts an imported key that is sensitive and never extractable', async () => {
      importAes('kek-imported-v1', true);
      const backend = await backendFor({ keyLabel: 'kek-imported' });
      const listed = await backend.listVersions(deadline());
      assert.deepEqual(
        listed.map(info => info.version),
        ['1'],
      );
      const wrapped = await wrap(backend, '1');
      assert.deepEqual(await unwrap(backend, wrapped), wrapped.seed);
      await closed(backend);
    });

    it('refuses an imported key that could leave the token, naming it and the fix', async () => {
      importAes('kek-leaky-v1', false);
      const backend = await backendFor({ keyLabel: 'kek-leaky' });
      await assert.rejects(backend.listVersions(deadline()), {
        code: 'HSM_KEY_UNSAFE',
        message:
          /key 'kek-leaky-v1' \(CKA_ID [0-9a-f]{16}\) could leave the token: CKA_SENSITIVE is false and CKA_EXTRACTABLE is true; set CKA_SENSITIVE=true and CKA_EXTRACTABLE=false/,
      });
      await assert.rejects(wrap(backend, '1'), { code: 'HSM_KEY_UNSAFE' });
      await closed(backend);
    });
  });

  it('never logs a seed or the PIN', () => {
    const pin = readFileSync(token.pinFile, 'utf8').trim();
    assert.ok(!log.text().includes(pin));
  });
});
