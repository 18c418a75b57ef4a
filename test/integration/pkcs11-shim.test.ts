// The PKCS#11 test shim (test/pkcs11-shim/shim.c) on a real SoftHSM token: each vendor rule
// it imposes, driven through pkcs11js directly, so later broker tests can rely on them.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import graphene from 'graphene-pk11';
import pkcs11js from 'pkcs11js';
import { createToken, type SoftHsmToken } from '../helpers/softhsm.ts';

const root = new URL('../..', import.meta.url).pathname;
const SHIM = join(root, '.cache/pkcs11-shim/libkms-broker-shim.so');
const SHIM_VARIABLES = [
  'KMS_BROKER_SHIM_GCM_IV',
  'KMS_BROKER_SHIM_MAX_SESSIONS',
  'KMS_BROKER_SHIM_IDLE_MS',
  'KMS_BROKER_SHIM_IDLE_CALLS',
  'KMS_BROKER_SHIM_LATENCY_US',
  'KMS_BROKER_SHIM_LABEL',
  'KMS_BROKER_SHIM_SERIAL',
] as const;
type ShimSettings = Partial<Record<(typeof SHIM_VARIABLES)[number], string>>;

interface Shim {
  readonly p11: pkcs11js.PKCS11;
  readonly slot: Buffer;
  /** A read-write session, logged in as the user when `login` is set. */
  open(login?: boolean): Buffer;
  close(): void;
}

let token: SoftHsmToken;
let pin: string;

/** Loads a shim and initializes it with `settings` (the shim reads them at C_Initialize). */
function loadShim(settings: ShimSettings, path = SHIM): Shim {
  const saved = new Map(SHIM_VARIABLES.map(name => [name, process.env[name]]));
  for (const name of SHIM_VARIABLES) delete process.env[name];
  Object.assign(process.env, settings, { SOFTHSM2_CONF: token.conf });
  const p11 = new pkcs11js.PKCS11();
  try {
    p11.load(path);
    p11.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
  } catch (error) {
    p11.close();
    throw error;
  } finally {
    for (const [name, value] of saved)
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
  }
  const slot = p11
    .C_GetSlotList(true)
    .find(candidate => p11.C_GetTokenInfo(candidate).label.trim() === token.label);
  assert.ok(slot, `token ${token.label} is visible through the shim`);
  return {
    p11,
    slot,
    open(login = false) {
      const session = p11.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
      if (login) p11.C_Login(session, pkcs11js.CKU_USER, pin);
      return session;
    },
    close() {
      p11.C_Finalize();
      p11.close();
    },
  };
}

/** The CKR_ name of a PKCS#11 error (pkcs11js puts it in the message). */
function ckr(action: () => unknown): string {
  try {
    action();
  } catch (error) {
    assert.ok(error instanceof pkcs11js.Pkcs11Error, `a PKCS#11 error, got ${String(error)}`);
    return error.message;
  }
  return 'CKR_OK';
}

function sessionKey(shim: Shim, session: Buffer): Buffer {
  return shim.p11.C_GenerateKey(session, { mechanism: pkcs11js.CKM_AES_KEY_GEN }, [
    { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
    { type: pkcs11js.CKA_TOKEN, value: false },
    { type: pkcs11js.CKA_VALUE_LEN, value: 32 },
    { type: pkcs11js.CKA_ENCRYPT, value: true },
    { type: pkcs11js.CKA_DECRYPT, value: true },
  ]);
}

function gcm(iv: Buffer): pkcs11js.Mechanism {
  const parameter: pkcs11js.GcmParams = { type: pkcs11js.CK_PARAMS_GCM, iv, ivBits: 96, tagBits: 128 };
  return { mechanism: pkcs11js.CKM_AES_GCM, parameter };
}

before(() => {
  execFileSync('bash', [join(root, 'scripts/build-pkcs11-shim.sh')], { stdio: 'pipe' });
  token = createToken('shim');
  pin = readFileSync(token.pinFile, 'utf8').trim();
});
after(() => token.remove());

describe('pkcs11 shim: token-chosen GCM IV (KMS_BROKER_SHIM_GCM_IV=token)', () => {
  it('refuses a caller IV, fills in a zero IV with its own, and that IV decrypts', () => {
    const shim = loadShim({ KMS_BROKER_SHIM_GCM_IV: 'token' });
    try {
      const session = shim.open(true);
      const key = sessionKey(shim, session);
      const callerIv = Buffer.alloc(12, 7);
      assert.equal(
        ckr(() => shim.p11.C_EncryptInit(session, gcm(callerIv), key)),
        'CKR_MECHANISM_PARAM_INVALID',
      );

      const iv = Buffer.alloc(12);
      const plaintext = Buffer.from('a 32-byte data-encryption seed!!');
      shim.p11.C_EncryptInit(session, gcm(iv), key);
      const wrapped = Buffer.from(
        shim.p11.C_Encrypt(session, plaintext, Buffer.alloc(plaintext.length + 16)),
      );
      assert.notDeepEqual(iv, Buffer.alloc(12), 'the token wrote the IV it chose into the caller buffer');

      shim.p11.C_DecryptInit(session, gcm(iv), key);
      const unwrapped = Buffer.from(shim.p11.C_Decrypt(session, wrapped, Buffer.alloc(wrapped.length)));
      assert.deepEqual(unwrapped, plaintext);

      const wrongIv = Buffer.alloc(12);
      shim.p11.C_DecryptInit(session, gcm(wrongIv), key);
      assert.notEqual(
        ckr(() => shim.p11.C_Decrypt(session, wrapped, Buffer.alloc(wrapped.length))),
        'CKR_OK',
      );
    } finally {
      shim.close();
    }
  });

  it('returns the IV through graphene-pk11 as the broker calls it (AesGcm240Params)', () => {
    process.env.KMS_BROKER_SHIM_GCM_IV = 'token';
    process.env.SOFTHSM2_CONF = token.conf;
    const module = graphene.Module.load(SHIM, 'shim');
    try {
      module.initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
    } finally {
      delete process.env.KMS_BROKER_SHIM_GCM_IV;
    }
    try {
      const slot = Array.from(module.getSlots(true)).find(
        candidate => candidate.getToken().label === token.label,
      );
      assert.ok(slot);
      const session = slot.open(graphene.SessionFlag.SERIAL_SESSION | graphene.SessionFlag.RW_SESSION);
      session.login(pin, graphene.UserType.USER);
      const key = session.generateKey(graphene.KeyGenMechanism.AES, {
        token: false,
        valueLen: 32,
        encrypt: true,
        decrypt: true,
      });
      const iv = Buffer.alloc(12);
      const aad = Buffer.from('envelope header');
      const plaintext = Buffer.from('seed');
      const cipher = session.createCipher(
        { name: 'AES_GCM', params: new graphene.AesGcm240Params(iv, aad, 128) },
        key,
      );
      const sealed = Buffer.concat([cipher.update(plaintext), cipher.final()]);
      assert.notDeepEqual(iv, Buffer.alloc(12));
      const decipher = session.createDecipher(
        { name: 'AES_GCM', params: new graphene.AesGcm240Params(Buffer.from(iv), aad, 128) },
        key,
      );
      assert.deepEqual(Buffer.concat([decipher.update(sealed), decipher.final()]), plaintext);
    } finally {
      module.finalize();
      module.close();
    }
  });

  it('leaves the caller IV alone when the variable is unset', () => {
    const shim = loadShim({});
    try {
      const session = shim.open(true);
      const iv = Buffer.alloc(12, 7);
      shim.p11.C_EncryptInit(session, gcm(iv), sessionKey(shim, session));
      assert.deepEqual(iv, Buffer.alloc(12, 7));
    } finally {
      shim.close();
    }
  });
});

describe('pkcs11 shim: IV appended to the output (KMS_BROKER_SHIM_GCM_IV=appended, appended96)', () => {
  const plaintext = Buffer.from('a 32-byte data-encryption seed!!');

  for (const { mode, ivBits, ivBytes } of [
    { mode: 'appended', ivBits: 96, ivBytes: 16 },
    { mode: 'appended96', ivBits: 96, ivBytes: 12 },
    { mode: 'appended96', ivBits: 128, ivBytes: 16 },
  ]) {
    it(`${mode} with ulIvBits ${ivBits}: refuses any IV, appends a ${ivBytes}-byte one that decrypts`, () => {
      const shim = loadShim({ KMS_BROKER_SHIM_GCM_IV: mode });
      try {
        const session = shim.open(true);
        const key = sessionKey(shim, session);
        assert.equal(
          ckr(() => shim.p11.C_EncryptInit(session, gcm(Buffer.alloc(12)), key)),
          'CKR_MECHANISM_PARAM_INVALID',
        );

        const noIv: pkcs11js.GcmParams = {
          type: pkcs11js.CK_PARAMS_GCM,
          iv: Buffer.alloc(0),
          ivBits,
          tagBits: 128,
        };
        shim.p11.C_EncryptInit(session, { mechanism: pkcs11js.CKM_AES_GCM, parameter: noIv }, key);
        assert.equal(
          ckr(() => shim.p11.C_Encrypt(session, plaintext, Buffer.alloc(plaintext.length + 16))),
          'CKR_BUFFER_TOO_SMALL',
          'no room for the IV: the operation stays active',
        );
        const output = Buffer.from(
          shim.p11.C_Encrypt(session, plaintext, Buffer.alloc(plaintext.length + 32)),
        );
        assert.equal(output.length, plaintext.length + 16 + ivBytes);
        const iv = output.subarray(output.length - ivBytes);
        const sealed = output.subarray(0, output.length - ivBytes);

        const withIv: pkcs11js.GcmParams = {
          type: pkcs11js.CK_PARAMS_GCM,
          iv,
          ivBits: ivBytes * 8,
          tagBits: 128,
        };
        shim.p11.C_DecryptInit(session, { mechanism: pkcs11js.CKM_AES_GCM, parameter: withIv }, key);
        assert.deepEqual(
          Buffer.from(shim.p11.C_Decrypt(session, sealed, Buffer.alloc(sealed.length))),
          plaintext,
        );
      } finally {
        shim.close();
      }
    });
  }
});

describe('pkcs11 shim: session limit (KMS_BROKER_SHIM_MAX_SESSIONS)', () => {
  it('opens at most N sessions, says so in the token info, and frees a place on close', () => {
    const shim = loadShim({ KMS_BROKER_SHIM_MAX_SESSIONS: '3' });
    try {
      const sessions = [shim.open(), shim.open(), shim.open()];
      assert.equal(
        ckr(() => shim.open()),
        'CKR_SESSION_COUNT',
      );
      const info = shim.p11.C_GetTokenInfo(shim.slot);
      assert.equal(info.maxSessionCount, 3);
      assert.equal(info.sessionCount, 3);

      shim.p11.C_CloseSession(sessions[0]!);
      assert.equal(shim.p11.C_GetTokenInfo(shim.slot).sessionCount, 2);
      const reopened = shim.open();
      assert.ok(shim.p11.C_GetSessionInfo(reopened));
    } finally {
      shim.close();
    }
  });
});

describe('pkcs11 shim: a network HSM (KMS_BROKER_SHIM_LATENCY_US)', () => {
  it('makes every call on a session wait a round trip first', () => {
    const latencyMs = 40;
    const shim = loadShim({ KMS_BROKER_SHIM_LATENCY_US: String(latencyMs * 1000) });
    try {
      const session = shim.open();
      const started = performance.now();
      shim.p11.C_GetSessionInfo(session);
      shim.p11.C_GetSessionInfo(session);
      assert.ok(performance.now() - started >= 2 * latencyMs, 'two calls, two round trips');
    } finally {
      shim.close();
    }
  });
});

describe('pkcs11 shim: idle reclaim', () => {
  it('reclaims a session after K calls on other sessions (KMS_BROKER_SHIM_IDLE_CALLS)', () => {
    const shim = loadShim({ KMS_BROKER_SHIM_IDLE_CALLS: '3', KMS_BROKER_SHIM_MAX_SESSIONS: '2' });
    try {
      const idle = shim.open();
      const busy = shim.open();
      shim.p11.C_GetSessionInfo(busy);
      shim.p11.C_GetSessionInfo(busy);
      assert.ok(shim.p11.C_GetSessionInfo(idle), 'two calls elsewhere are within the limit');
      for (let call = 0; call < 3; call++) shim.p11.C_GetSessionInfo(busy);
      assert.equal(
        ckr(() => shim.p11.C_GetSessionInfo(idle)),
        'CKR_SESSION_HANDLE_INVALID',
      );
      assert.equal(
        shim.p11.C_GetTokenInfo(shim.slot).sessionCount,
        1,
        'the reclaimed session no longer counts',
      );
      assert.ok(shim.p11.C_GetSessionInfo(busy), 'the session in use stays open');
    } finally {
      shim.close();
    }
  });

  it('reclaims a session idle for M ms (KMS_BROKER_SHIM_IDLE_MS)', async () => {
    const idleMs = 150;
    const shim = loadShim({ KMS_BROKER_SHIM_IDLE_MS: String(idleMs) });
    try {
      const session = shim.open();
      const openedAt = performance.now();
      shim.p11.C_GetSessionInfo(session);
      // Real time is the behaviour under test: wait past the limit once, by the clock.
      while (performance.now() - openedAt < idleMs * 2) await delay(idleMs);
      assert.equal(
        ckr(() => shim.p11.C_GetSessionInfo(session)),
        'CKR_SESSION_HANDLE_INVALID',
      );
    } finally {
      shim.close();
    }
  });
});

describe('pkcs11 shim: settings', () => {
  it('refuses to initialize with a setting it cannot read', () => {
    assert.equal(
      ckr(() => loadShim({ KMS_BROKER_SHIM_MAX_SESSIONS: 'three' })),
      'CKR_ARGUMENTS_BAD',
    );
    assert.equal(
      ckr(() => loadShim({ KMS_BROKER_SHIM_GCM_IV: 'host' })),
      'CKR_ARGUMENTS_BAD',
    );
  });
});

describe('pkcs11 shim: identity', () => {
  it('reports its manufacturer, label and serial, and a copy at another path is told apart', () => {
    const copy = join(token.dir, 'libshim-b.so');
    copyFileSync(SHIM, copy);
    const first = loadShim({ KMS_BROKER_SHIM_LABEL: 'luna-a', KMS_BROKER_SHIM_SERIAL: '4242' });
    const second = loadShim({}, copy);
    try {
      assert.equal(first.p11.C_GetInfo().manufacturerID.trim(), 'kms-broker shim');
      const info = first.p11.C_GetTokenInfo(first.slot);
      assert.equal(info.manufacturerID.trim(), 'kms-broker shim');
      assert.equal(info.model.trim(), 'luna-a');
      assert.equal(info.serialNumber.trim(), '4242');
      assert.equal(info.label.trim(), token.label, 'the token label is never changed');

      // Both copies are initialized at once: each drives its own SoftHSM instance.
      const other = second.p11.C_GetTokenInfo(second.slot);
      assert.equal(other.model.trim(), 'shim-b');
      assert.notEqual(other.serialNumber.trim(), '4242');
      assert.ok(second.p11.C_GetSessionInfo(second.open(true)));
      assert.ok(first.p11.C_GetSessionInfo(first.open(true)));
    } finally {
      first.close();
      second.close();
    }
  });
});
