// The drill's decrypt, against vectors it did not make: RFC 5869's HKDF-Expand, kube-apiserver's
// own recorded KDF ciphertext, and values encrypted with node:crypto as the apiserver lays them out.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { decryptKmsV1, decryptKmsV2, hkdfExpand } from '../../src/recovery/kms-decrypt.ts';
import { kdfEncrypt, legacyEncrypt, v1CbcEncrypt, v1GcmEncrypt } from '../helpers/kube-encrypt.ts';

describe('recovery: decrypting stored data as kube-apiserver does', () => {
  it('HKDF-Expand gives RFC 5869 test case 1', () => {
    const prk = Buffer.from('077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5', 'hex');
    const info = Buffer.from('f0f1f2f3f4f5f6f7f8f9', 'hex');
    assert.equal(
      hkdfExpand(prk, info, 42).toString('hex'),
      '3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865',
    );
  });

  it("opens kube-apiserver's recorded KDF ciphertext (aes_extended_nonce_test.go, TestExtendedNonceGCMLegacyDataCompatibility)", () => {
    // The Go string literals of that test, as bytes (converted with `go run`).
    const seed = Buffer.from('5d40323a820ff95561675e3b95e81867c5fdd561d35a88a2d08b08aa9d4fcf5c', 'hex');
    const data = Buffer.from(
      '2442759e33945fbad709db577a0f037fd8a709fc76979b8942209debcecb9d57efe3d6ff6a1ef6ee9a5003b9833b3043cec1e47b35175b151107a8d2416b0e296bbf66b5d102fcefdf9a78f293d271',
      'hex',
    );
    assert.equal(decryptKmsV2(seed, 1, data, Buffer.from('bamboo')).toString(), 'pandas are the best');
    assert.throws(() => decryptKmsV2(seed, 1, data, Buffer.from('bambou')), 'the AAD (etcd key) is bound');
  });

  it('opens KMS v2 KDF and legacy (AES_GCM_KEY) data, bound to the etcd key', () => {
    const seed = randomBytes(32);
    const key = '/registry/secrets/default/a';
    const plain = Buffer.from('k8s\0 a secret');
    assert.deepEqual(decryptKmsV2(seed, 1, kdfEncrypt(seed, plain, key), Buffer.from(key)), plain);
    assert.deepEqual(decryptKmsV2(seed, 0, legacyEncrypt(seed, plain, key), Buffer.from(key)), plain);
    assert.throws(() => decryptKmsV2(seed, 1, kdfEncrypt(seed, plain, key), Buffer.from(`${key}x`)));
    assert.throws(() => decryptKmsV2(randomBytes(32), 1, kdfEncrypt(seed, plain, key), Buffer.from(key)));
    assert.throws(
      () => decryptKmsV2(seed, 7, kdfEncrypt(seed, plain, key), Buffer.from(key)),
      /unknown DEK source type/,
    );
  });

  it('opens KMS v1 data written with AES-GCM, and with AES-CBC before 1.25', () => {
    const dek = randomBytes(32);
    const key = '/registry/secrets/default/b';
    for (const length of [0, 1, 15, 16, 17, 1000]) {
      const plain = randomBytes(length);
      assert.deepEqual(decryptKmsV1(dek, v1GcmEncrypt(dek, plain, key), Buffer.from(key)), plain);
      assert.deepEqual(decryptKmsV1(dek, v1CbcEncrypt(dek, plain), Buffer.from(key)), plain);
    }
    assert.throws(() =>
      decryptKmsV1(randomBytes(32), v1GcmEncrypt(dek, Buffer.from('x'), key), Buffer.from(key)),
    );
  });
});
