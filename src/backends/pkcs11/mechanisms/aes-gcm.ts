// AES-256-GCM through C_Encrypt/C_Decrypt with the envelope header as AAD. The wrapped bytes
// are IV || ciphertext || tag for both ways of getting the IV:
// - aes-gcm: the host draws a fresh 96-bit IV (what SoftHSM and most tokens accept);
// - aes-gcm-hsm-iv: the token draws it (AWS CloudHSM refuses a caller's IV). The broker passes
//   a zero IV field; the token writes its IV into that buffer (PKCS#11 v2.40 errata 01, v3.0),
//   and the broker stores it. A token that leaves it zero did not choose one. (A Luna in FIPS
//   mode appends its IV to the output instead: not spoken here, see docs/backends/pkcs11.md.)
// Reading is the same for both: the IV travels with the wrap.
import { randomBytes } from 'node:crypto';
import graphene from 'graphene-pk11';
import { BrokerError } from '../../../errors.ts';
import { runOnce, type Pkcs11Mechanism, type VersionKey } from './mechanism.ts';

const IV_BYTES = 12;
const TAG_BYTES = 16;
const CKM_AES_GCM = 0x1087;
const CKF_ENCRYPT = 0x100;
const CKF_DECRYPT = 0x200;

function params(iv: Buffer, header: Buffer): graphene.AesGcm240Params {
  // The v2.40 layout carries ulIvBits, which some tokens read instead of ulIvLen.
  return new graphene.AesGcm240Params(iv, header, TAG_BYTES * 8);
}

async function seal(
  session: graphene.Session,
  key: VersionKey,
  seed: Buffer,
  header: Buffer,
  iv: Buffer,
): Promise<Buffer> {
  const cipher = session.createCipher({ name: 'AES_GCM', params: params(iv, header) }, key.key);
  const sealed = await runOnce(cipher, seed, seed.length + TAG_BYTES);
  return Buffer.concat([iv, sealed]);
}

function open(session: graphene.Session, key: VersionKey, wrapped: Buffer, header: Buffer): Promise<Buffer> {
  const iv = Buffer.from(wrapped.subarray(0, IV_BYTES));
  const sealed = Buffer.from(wrapped.subarray(IV_BYTES));
  const decipher = session.createDecipher({ name: 'AES_GCM', params: params(iv, header) }, key.key);
  return runOnce(decipher, sealed, sealed.length);
}

const gcm = {
  keyKind: 'aes',
  sealsWith: 'encrypt',
  opensWith: 'decrypt',
  requires: { type: CKM_AES_GCM, flags: CKF_ENCRYPT | CKF_DECRYPT },
  minWrappedBytes: IV_BYTES + TAG_BYTES + 1,
  open,
} as const;

export const aesGcm: Pkcs11Mechanism = {
  ...gcm,
  name: 'aes-gcm',
  seal: (session, key, seed, header) => seal(session, key, seed, header, randomBytes(IV_BYTES)),
};

export const aesGcmHsmIv: Pkcs11Mechanism = {
  ...gcm,
  name: 'aes-gcm-hsm-iv',
  async seal(session, key, seed, header) {
    // Buffer.alloc never comes from the shared pool: the token may write into this one.
    const iv = Buffer.alloc(IV_BYTES);
    const wrapped = await seal(session, key, seed, header, iv);
    if (iv.every(byte => byte === 0)) {
      throw new BrokerError(
        'BACKEND_UNAVAILABLE',
        'the token did not return a GCM IV of its own; it takes the IV from the host: set mechanism: aes-gcm',
        'GCM_IV_NOT_GENERATED',
      );
    }
    return wrapped;
  },
};
