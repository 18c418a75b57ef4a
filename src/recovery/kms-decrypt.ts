// Decrypts one stored value's data exactly as kube-apiserver does, once its DEK seed (KMS v2)
// or DEK (KMS v1) is known. k8s.io/apiserver pkg/storage/value/encrypt:
//   KMS v2, HKDF_SHA256_XNONCE_AES_GCM_SEED (1.28+): data = info(32) || nonce(12) || ct || tag(16);
//     DEK = first 32 bytes of HKDF-Expand(SHA-256, PRK = seed, info), with no HKDF-Extract
//     (aes_extended_nonce.go); AES-256-GCM, AAD = the etcd key.
//   KMS v2, AES_GCM_KEY (1.25-1.27 data): the seed is the DEK; data = nonce(12) || ct || tag.
//   KMS v1 (envelope.go + config.go): the DEK is the unwrapped 32 bytes; written with AES-GCM
//     (random nonce, AAD = the etcd key) since 1.25, and read with an AES-CBC fallback
//     (iv(16) || ct, PKCS#7, no AAD) for data written before.
// node:crypto's hkdfSync always extracts first, so Expand is written out per RFC 5869.
import { createDecipheriv, createHmac } from 'node:crypto';

const INFO_BYTES = 32;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const KEY_BYTES = 32;
const CBC_IV_BYTES = 16;

/** EncryptedDEKSourceType of a KMS v2 EncryptedObject. */
export const AES_GCM_KEY = 0;
export const HKDF_SHA256_XNONCE_AES_GCM_SEED = 1;

/** RFC 5869 HKDF-Expand: T(i) = HMAC(PRK, T(i-1) || info || i), the first `length` bytes of T(1) || T(2) ... */
export function hkdfExpand(prk: Buffer, info: Buffer, length: number): Buffer {
  const blocks: Buffer[] = [];
  let previous = Buffer.alloc(0);
  for (let i = 1; blocks.length * 32 < length; i++) {
    previous = createHmac('sha256', prk).update(previous).update(info).update(Buffer.of(i)).digest();
    blocks.push(previous);
  }
  return Buffer.concat(blocks).subarray(0, length);
}

/** AES-256-GCM open of nonce || ct || tag; throws on a wrong key, AAD or any changed byte. */
export function openGcm(key: Buffer, data: Buffer, aad: Buffer): Buffer {
  if (data.length < NONCE_BYTES + TAG_BYTES) throw new Error('too short for AES-GCM');
  const nonce = data.subarray(0, NONCE_BYTES);
  const tag = data.subarray(data.length - TAG_BYTES);
  const decipher = createDecipheriv(`aes-${key.length * 8}-gcm` as 'aes-256-gcm', key, nonce, {
    authTagLength: TAG_BYTES,
  });
  decipher.setAAD(aad);
  decipher.setAuthTag(tag);
  return Buffer.concat([
    decipher.update(data.subarray(NONCE_BYTES, data.length - TAG_BYTES)),
    decipher.final(),
  ]);
}

/** The plaintext of a KMS v2 EncryptedObject's encryptedData, stored under etcd key `key`. */
export function decryptKmsV2(seed: Buffer, sourceType: number, encryptedData: Buffer, key: Buffer): Buffer {
  if (seed.length !== KEY_BYTES) throw new Error('the DEK source is not 32 bytes');
  if (sourceType === AES_GCM_KEY) return openGcm(seed, encryptedData, key);
  if (sourceType !== HKDF_SHA256_XNONCE_AES_GCM_SEED)
    throw new Error(`unknown DEK source type ${sourceType}`);
  if (encryptedData.length < INFO_BYTES + NONCE_BYTES + TAG_BYTES) throw new Error('too short for its info');
  const dek = hkdfExpand(seed, encryptedData.subarray(0, INFO_BYTES), KEY_BYTES);
  try {
    return openGcm(dek, encryptedData.subarray(INFO_BYTES), key);
  } finally {
    dek.fill(0);
  }
}

/** The plaintext of a KMS v1 value's data (after the DEK ciphertext): GCM, else the CBC fallback. */
export function decryptKmsV1(dek: Buffer, data: Buffer, key: Buffer): Buffer {
  if (dek.length !== KEY_BYTES) throw new Error('the DEK is not 32 bytes');
  try {
    return openGcm(dek, data, key);
  } catch (gcmError) {
    const plain = openCbc(dek, data);
    if (plain === undefined) throw gcmError;
    return plain;
  }
}

/** AES-CBC with PKCS#7 as the apiserver's cbc transformer checks it; undefined if it does not open. */
function openCbc(key: Buffer, data: Buffer): Buffer | undefined {
  if (data.length < 2 * CBC_IV_BYTES || data.length % CBC_IV_BYTES !== 0) return undefined;
  const decipher = createDecipheriv('aes-256-cbc', key, data.subarray(0, CBC_IV_BYTES)).setAutoPadding(false);
  const plain = Buffer.concat([decipher.update(data.subarray(CBC_IV_BYTES)), decipher.final()]);
  const pad = plain.at(-1) ?? 0;
  if (pad === 0 || pad > plain.length) return undefined;
  for (let i = plain.length - pad; i < plain.length; i++) if (plain[i] !== pad) return undefined;
  return plain.subarray(0, plain.length - pad);
}
