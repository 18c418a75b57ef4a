// AES-GCM parameters as the broker passes them: the v2.40 layout (CK_GCM_PARAMS with
// ulIvBits, which some tokens read instead of ulIvLen), a 128-bit tag, the header as AAD.
import pkcs11js from 'pkcs11js';
import type { CipherOp, CipherParams } from '../threads/cipher-call.ts';
import type { VersionKey } from './mechanism.ts';

/** The IV the host draws, and the IV field a token fills in. */
export const IV_BYTES = 12;
export const TAG_BYTES = 16;

export function gcmParams(iv: Buffer, header: Buffer): CipherParams {
  return { kind: 'gcm', iv, ivBits: iv.length * 8, aad: header, tagBits: TAG_BYTES * 8 };
}

/** No IV at all (ulIvLen 0) and ulIvBits 96: a token that appends the IV it draws. */
export function noIvParams(header: Buffer): CipherParams {
  return { kind: 'gcm', iv: Buffer.alloc(0), ivBits: IV_BYTES * 8, aad: header, tagBits: TAG_BYTES * 8 };
}

/** One GCM call with `key`'s AES key object. */
export function gcmCall(
  direction: CipherOp['direction'],
  key: VersionKey,
  params: CipherParams,
  input: Buffer,
  outputBytes: number,
): CipherOp {
  return { direction, key: key.key.handle, mechanism: pkcs11js.CKM_AES_GCM, params, input, outputBytes };
}
