// kube-apiserver's encryption of stored data, written out for tests that need values only a
// correct decrypt opens: KMS v2 with the KDF (info || nonce || ct || tag, the DEK from
// HKDF-Expand over the seed), KMS v2 legacy AES_GCM_KEY, and KMS v1's AES-GCM and AES-CBC.
// The AAD is the etcd key, as the apiserver binds it.
import { createCipheriv, createHmac, randomBytes } from 'node:crypto';

function sealGcm(key: Buffer, plaintext: Buffer, aad: Buffer): Buffer {
  const nonce = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', key, nonce).setAAD(aad);
  return Buffer.concat([nonce, cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]);
}

/** EncryptedData of HKDF_SHA256_XNONCE_AES_GCM_SEED. */
export function kdfEncrypt(seed: Buffer, plaintext: Buffer, etcdKey: string): Buffer {
  const info = randomBytes(32);
  // HKDF-Expand, one block: T(1) = HMAC-SHA256(PRK = seed, info || 0x01); 32 bytes is all of it.
  const dek = createHmac('sha256', seed).update(info).update(Buffer.of(1)).digest();
  return Buffer.concat([info, sealGcm(dek, plaintext, Buffer.from(etcdKey))]);
}

/** EncryptedData of AES_GCM_KEY (1.25-1.27): the seed is the DEK. */
export function legacyEncrypt(dek: Buffer, plaintext: Buffer, etcdKey: string): Buffer {
  return sealGcm(dek, plaintext, Buffer.from(etcdKey));
}

/** KMS v1 data after the DEK ciphertext: AES-GCM since 1.25. */
export function v1GcmEncrypt(dek: Buffer, plaintext: Buffer, etcdKey: string): Buffer {
  return sealGcm(dek, plaintext, Buffer.from(etcdKey));
}

/** KMS v1 data as written before 1.25: iv || AES-CBC with PKCS#7, no AAD. */
export function v1CbcEncrypt(dek: Buffer, plaintext: Buffer): Buffer {
  const iv = randomBytes(16);
  const cipher = createCipheriv('aes-256-cbc', dek, iv);
  return Buffer.concat([iv, cipher.update(plaintext), cipher.final()]);
}
