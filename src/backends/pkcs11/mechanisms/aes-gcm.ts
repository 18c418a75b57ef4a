// AES-256-GCM through C_Encrypt/C_Decrypt with the envelope header as AAD, the 128-bit tag
// after the ciphertext. Two ways of getting the IV:
// - aes-gcm: the host draws a fresh 96-bit IV. Stored: IV(12) || ciphertext || tag.
// - aes-gcm-hsm-iv: the token draws it, for tokens that refuse a caller's IV. Tokens return
//   it in one of two documented ways (see token-iv.ts); the stored form names its length,
//   as a token may draw 12 or 16 bytes: len(1) || IV || ciphertext || tag.
import { randomBytes } from 'node:crypto';
import type graphene from 'graphene-pk11';
import pkcs11js from 'pkcs11js';
import { BrokerError } from '../../../errors.ts';
import { runOnce, type Pkcs11Mechanism, type VersionKey } from './mechanism.ts';
import { gcmParams, IV_BYTES, TAG_BYTES } from './gcm-params.ts';
import { sealWithTokenIv, TOKEN_IV_LENGTHS, type IvConvention } from './token-iv.ts';

function openGcm(session: graphene.Session, key: VersionKey, iv: Buffer, sealed: Buffer, header: Buffer) {
  const decipher = session.createDecipher({ name: 'AES_GCM', params: gcmParams(iv, header) }, key.key);
  return runOnce(decipher, sealed, sealed.length);
}

const gcm = {
  keyKind: 'aes',
  sealsWith: 'encrypt',
  opensWith: 'decrypt',
  requires: { type: pkcs11js.CKM_AES_GCM, flags: pkcs11js.CKF_ENCRYPT | pkcs11js.CKF_DECRYPT },
} as const;

export const aesGcm: Pkcs11Mechanism = {
  ...gcm,
  name: 'aes-gcm',
  minWrappedBytes: IV_BYTES + TAG_BYTES + 1,
  async seal(session, key, seed, header) {
    const iv = randomBytes(IV_BYTES);
    const cipher = session.createCipher({ name: 'AES_GCM', params: gcmParams(iv, header) }, key.key);
    return Buffer.concat([iv, await runOnce(cipher, seed, seed.length + TAG_BYTES)]);
  },
  open: (session, key, wrapped, header) =>
    openGcm(
      session,
      key,
      Buffer.from(wrapped.subarray(0, IV_BYTES)),
      Buffer.from(wrapped.subarray(IV_BYTES)),
      header,
    ),
};

/** aes-gcm-hsm-iv for one token: it learns, on its first wrap, how the token returns the IV. */
export function aesGcmHsmIv(): Pkcs11Mechanism & { readonly ivConvention: IvConvention | undefined } {
  const learned: { convention?: IvConvention } = {};
  return {
    /** How this token returned its IV, once a wrap succeeded. */
    get ivConvention() {
      return learned.convention;
    },
    ...gcm,
    name: 'aes-gcm-hsm-iv',
    minWrappedBytes: 1 + IV_BYTES + TAG_BYTES + 1,
    async seal(session, key, seed, header) {
      const { iv, sealed } = await sealWithTokenIv(session, key.key, seed, header, learned);
      return Buffer.concat([Buffer.from([iv.length]), iv, sealed]);
    },
    open(session, key, wrapped, header) {
      const ivLength = wrapped[0] as number;
      if (!TOKEN_IV_LENGTHS.includes(ivLength) || wrapped.length < 1 + ivLength + TAG_BYTES + 1) {
        return Promise.reject(new BrokerError('INVALID_CIPHERTEXT', 'the wrapped key is malformed'));
      }
      const iv = Buffer.from(wrapped.subarray(1, 1 + ivLength));
      return openGcm(session, key, iv, Buffer.from(wrapped.subarray(1 + ivLength)), header);
    },
  };
}
