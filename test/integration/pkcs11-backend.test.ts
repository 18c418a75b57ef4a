// The PKCS#11 backend in-process on a real SoftHSM token: key objects, wraps, and recovery
// when the sessions, the login or the library itself are lost underneath it.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import graphene from 'graphene-pk11';
import type { KekBackend } from '../../src/backends/kek.ts';
import { Pkcs11Backend } from '../../src/backends/pkcs11/pkcs11-backend.ts';
import { loadModule } from '../../src/backends/pkcs11/module-cache.ts';
import { readSecret } from '../../src/secrets.ts';
import { validateConfig } from '../../src/config/load.ts';
import type { Pkcs11BackendConfig } from '../../src/backends/pkcs11/pkcs11-schema.ts';
import { createLogger } from '../../src/log.ts';
import { pkcs11Backend } from '../helpers/config.ts';
import { createToken, SOFTHSM_MODULE, type SoftHsmToken } from '../helpers/softhsm.ts';
import { memoryLog } from '../helpers/memory-log.ts';
import { startDeadline } from '../../src/deadline.ts';

function backendConfig(token: SoftHsmToken, overrides: Record<string, unknown> = {}): Pkcs11BackendConfig {
  const config = validateConfig({
    socket: '/tmp/unused.sock',
    state: { path: '/tmp/unused.json' },
    backends: [pkcs11Backend(token, overrides)],
    failover: { order: ['hsm'] },
  });
  return config.backends[0] as Pkcs11BackendConfig;
}

const deadline = () => startDeadline(5000);

/** C_CloseAllSessions from elsewhere in the process: the backend's sessions and login die. */
function closeAllSessions(): void {
  const module = loadModule(SOFTHSM_MODULE);
  try {
    module.module.getSlots(0, true).closeAll();
  } finally {
    module.release();
  }
}

describe('PKCS#11 backend on SoftHSM', () => {
  let token: SoftHsmToken;
  let backend: KekBackend;
  const log = memoryLog();

  before(async () => {
    token = createToken();
    // SoftHSM reads its configuration when the library is initialized in this process.
    process.env.SOFTHSM2_CONF = token.conf;
    backend = new Pkcs11Backend(backendConfig(token), {
      readSecret,
      logger: createLogger('info', log.stream),
    });
    await backend.open();
  });

  after(async () => {
    await backend.close();
    token.remove();
  });

  async function roundTrip(keyVersion: string, label: string): Promise<void> {
    const plaintext = randomBytes(32);
    const aad = Buffer.from(label);
    const wrapped = await backend.wrap({ plaintext, keyVersion, aad, deadline: deadline() });
    assert.deepEqual(
      await backend.unwrap({ wrapped, keyVersion, mechanism: 'aes-gcm', aad, deadline: deadline() }),
      plaintext,
    );
  }

  it('creates numbered, non-extractable, sensitive AES-256 key objects', async () => {
    assert.deepEqual(await backend.listVersions(deadline()), []);
    const first = await backend.createVersion(deadline());
    const second = await backend.createVersion(deadline());
    assert.equal(first.version, '1');
    assert.equal(second.version, '2');
    assert.notEqual(first.fingerprint, second.fingerprint);
    const listed = await backend.listVersions(deadline());
    assert.deepEqual(
      listed.map(info => info.version),
      ['1', '2'],
    );

    const module = loadModule(SOFTHSM_MODULE);
    try {
      const slot = module.module.getSlots(0, true);
      const session = slot.open(graphene.SessionFlag.SERIAL_SESSION);
      try {
        // No login: the backend's login covers every session of this process.
        const key = session.find({ label: 'kek-v1' }).items(0).toType<graphene.SecretKey>();
        assert.equal(key.extractable, false);
        assert.equal(key.sensitive, true);
        assert.equal(key.token, true);
        assert.equal(key.getAttribute({ valueLen: null }).valueLen, 32);
      } finally {
        session.close();
      }
    } finally {
      module.release();
    }
  });

  it('wraps with a fresh IV each time and unwraps only with the same AAD and version', async () => {
    const plaintext = randomBytes(32);
    const aad = Buffer.from('header');
    const first = await backend.wrap({ plaintext, keyVersion: '1', aad, deadline: deadline() });
    const second = await backend.wrap({ plaintext, keyVersion: '1', aad, deadline: deadline() });
    assert.notDeepEqual(first.subarray(0, 12), second.subarray(0, 12));
    assert.deepEqual(
      await backend.unwrap({
        wrapped: first,
        keyVersion: '1',
        mechanism: 'aes-gcm',
        aad,
        deadline: deadline(),
      }),
      plaintext,
    );
    await assert.rejects(
      backend.unwrap({
        wrapped: first,
        keyVersion: '1',
        mechanism: 'aes-gcm',
        aad: Buffer.from('other'),
        deadline: deadline(),
      }),
      { code: 'INVALID_CIPHERTEXT' },
    );
    await assert.rejects(
      backend.unwrap({ wrapped: first, keyVersion: '2', mechanism: 'aes-gcm', aad, deadline: deadline() }),
      { code: 'INVALID_CIPHERTEXT' },
    );
    await assert.rejects(
      backend.unwrap({ wrapped: first, keyVersion: '1', mechanism: 'aes-kw', aad, deadline: deadline() }),
      { code: 'INVALID_CIPHERTEXT' },
    );
    await assert.rejects(backend.wrap({ plaintext, keyVersion: '7', aad, deadline: deadline() }), {
      code: 'UNKNOWN_KEY_VERSION',
    });
  });

  it('recovers once when every session, and with them the login, is lost', async () => {
    closeAllSessions();
    await roundTrip('2', 'after-loss');
    await backend.probe(deadline());
    assert.ok(log.records().some(record => record.msg === 'recovering HSM connection'));
  });

  it('notices a lost login in its probe and recovers it', async () => {
    closeAllSessions();
    const before = log.records().filter(record => record.msg === 'recovering HSM connection').length;
    await backend.probe(deadline());
    assert.equal(
      log.records().filter(record => record.msg === 'recovering HSM connection').length,
      before + 1,
    );
  });

  it('re-initializes the library after it was finalized underneath it', async () => {
    const module = loadModule(SOFTHSM_MODULE);
    module.module.finalize();
    module.release();
    await roundTrip('1', 'after-finalize');
    assert.ok(
      log.records().some(record => record.msg === 'recovering HSM connection' && record.failure === 'device'),
    );
  });

  it('keeps 200 concurrent wraps correct on a pool of 4 sessions', async () => {
    const inputs = Array.from({ length: 200 }, () => randomBytes(32));
    const aad = Buffer.from('concurrent');
    const wrapped = await Promise.all(
      inputs.map(plaintext => backend.wrap({ plaintext, keyVersion: '2', aad, deadline: deadline() })),
    );
    const unwrapped = await Promise.all(
      wrapped.map(item =>
        backend.unwrap({ wrapped: item, keyVersion: '2', mechanism: 'aes-gcm', aad, deadline: deadline() }),
      ),
    );
    unwrapped.forEach((plaintext, index) => assert.deepEqual(plaintext, inputs[index]));
  });

  it('gives up with DEADLINE_EXCEEDED when the deadline passes while waiting for a session', async () => {
    const aad = Buffer.from('deadline');
    await assert.rejects(
      backend.wrap({
        plaintext: randomBytes(32),
        keyVersion: '1',
        aad,
        deadline: { signal: AbortSignal.abort(), at: Date.now() },
      }),
      { code: 'DEADLINE_EXCEEDED' },
    );
  });
});

describe('PKCS#11 backend: the token chosen by slot id', () => {
  it('finds the token by its CK_SLOT_ID, and names the slot when none is there', async () => {
    const token = createToken();
    process.env.SOFTHSM2_CONF = token.conf;
    const module = loadModule(SOFTHSM_MODULE);
    let slotId: number;
    try {
      const slots = module.module.getSlots(true);
      const slot = Array.from({ length: slots.length }, (_, index) => slots.items(index)).find(
        candidate => candidate.getToken().label.trim() === token.label,
      );
      assert.ok(slot);
      slotId = Number(slot.handle.readBigUInt64LE(0));
    } finally {
      module.release();
    }
    const open = async (id: number) => {
      const backend = new Pkcs11Backend(backendConfig(token, { tokenLabel: undefined, slotId: id }), {
        readSecret,
        logger: createLogger('info', memoryLog().stream),
      });
      await backend.open();
      return backend;
    };
    try {
      const backend = await open(slotId);
      const version = (await backend.createVersion(deadline())).version;
      const plaintext = randomBytes(32);
      const aad = Buffer.from('slot');
      const wrapped = await backend.wrap({ plaintext, keyVersion: version, aad, deadline: deadline() });
      assert.deepEqual(
        await backend.unwrap({
          wrapped,
          keyVersion: version,
          mechanism: 'aes-gcm',
          aad,
          deadline: deadline(),
        }),
        plaintext,
      );
      await backend.close();
      await assert.rejects(open(slotId + 1), {
        code: 'HSM_TOKEN_NOT_FOUND',
        message: `backend hsm: no token in slot ${slotId + 1} in ${SOFTHSM_MODULE}`,
      });
    } finally {
      token.remove();
    }
  });
});
