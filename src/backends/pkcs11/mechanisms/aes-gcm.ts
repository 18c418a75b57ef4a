// AES-256-GCM through C_Encrypt/C_Decrypt with the envelope header as AAD, the 128-bit tag
// after the ciphertext. Two ways of getting the IV:
// - aes-gcm: the host draws a fresh 96-bit IV. Stored: IV(12) || ciphertext || tag.
// - aes-gcm-hsm-iv: the token draws it, for tokens that refuse a caller's IV. Tokens return
//   it in one of two documented ways (see token-iv.ts); the stored form names its length,
//   as a token may draw 12 or 16 bytes: len(1) || IV || ciphertext || tag.
import { randomBytes } from 'node:crypto';
import pkcs11js from 'pkcs11js';
import { BrokerError } from '../../../errors.ts';
import type { Pkcs11Mechanism, SessionLane, VersionKey } from './mechanism.ts';
import { gcmCall, gcmParams, IV_BYTES, TAG_BYTES } from './gcm-params.ts';
import { sealWithTokenIv, TOKEN_IV_LENGTHS, type IvConvention } from './token-iv.ts';

async function openGcm(lane: SessionLane, key: VersionKey, iv: Buffer, sealed: Buffer, header: Buffer) {
  const { output } = await lane.cipher(gcmCall('decrypt', key, gcmParams(iv, header), sealed, sealed.length));
  return output;
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
  async seal(lane, key, seed, header) {
    const iv = randomBytes(IV_BYTES);
    const sealed = await lane.cipher(
      gcmCall('encrypt', key, gcmParams(iv, header), seed, seed.length + TAG_BYTES),
    );
    return Buffer.concat([iv, sealed.output]);
  },
  open: (lane, key, wrapped, header) =>
    openGcm(lane, key, wrapped.subarray(0, IV_BYTES), wrapped.subarray(IV_BYTES), header),
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
    async seal(lane, key, seed, header) {
      const { iv, sealed } = await sealWithTokenIv(lane, key, seed, header, learned);
      return Buffer.concat([Buffer.from([iv.length]), iv, sealed]);
    },
    open(lane, key, wrapped, header) {
      const ivLength = wrapped[0] as number;
      if (!TOKEN_IV_LENGTHS.includes(ivLength) || wrapped.length < 1 + ivLength + TAG_BYTES + 1) {
        return Promise.reject(new BrokerError('INVALID_CIPHERTEXT', 'the wrapped key is malformed'));
      }
      return openGcm(lane, key, wrapped.subarray(1, 1 + ivLength), wrapped.subarray(1 + ivLength), header);
    },
  };
}
