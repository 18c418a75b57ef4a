// The escrow wrap: a round trip, its stated size, and one error (ESCROW_UNWRAP_FAILED) for
// every way a wrap can fail to open, so the error says nothing about which check failed.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ESCROW_WRAP_OVERHEAD, openFromEscrow, sealToEscrow } from '../../src/escrow/hybrid-wrap.ts';
import { generateEscrowKeyPair } from '../../src/escrow/key-files.ts';
import { brokerError } from './expect-error.ts';

const { publicKey, privateKey } = generateEscrowKeyPair();
const seed = Buffer.alloc(32, 7);
const aad = Buffer.from('envelope header', 'utf8');
const wrap = sealToEscrow(publicKey, seed, aad);
const failed = brokerError('ESCROW_UNWRAP_FAILED');

describe('escrow wrap (ML-KEM-768 + X25519, HKDF-SHA256, AES-256-GCM)', () => {
  it('opens with the private key and the same header', () => {
    assert.deepEqual(openFromEscrow(privateKey, wrap, aad), seed);
  });

  it('is 1149 bytes plus the plaintext: 1181 bytes for a 32-byte seed', () => {
    assert.equal(ESCROW_WRAP_OVERHEAD, 1 + 1088 + 32 + 12 + 16);
    assert.equal(wrap.length, 1181);
    assert.equal(sealToEscrow(publicKey, Buffer.alloc(0), aad).length, ESCROW_WRAP_OVERHEAD);
  });

  it('never repeats: two wraps of one seed differ', () => {
    assert.notDeepEqual(sealToEscrow(publicKey, seed, aad), wrap);
  });

  it('refuses another header (AAD)', () => {
    assert.throws(() => openFromEscrow(privateKey, wrap, Buffer.from('another header')), failed);
  });

  it('refuses a flipped byte anywhere in the wrap', () => {
    for (let index = 0; index < wrap.length; index++) {
      const tampered = Buffer.from(wrap);
      tampered[index] = (tampered[index] as number) ^ 0x01;
      assert.throws(() => openFromEscrow(privateKey, tampered, aad), failed, `byte ${index}`);
    }
  });

  it('refuses a truncated or empty wrap', () => {
    for (const length of [0, 1, 1089, ESCROW_WRAP_OVERHEAD - 1, wrap.length - 1])
      assert.throws(() => openFromEscrow(privateKey, wrap.subarray(0, length), aad), failed, `${length}`);
  });

  it('refuses the private key of another escrow key pair', () => {
    assert.throws(() => openFromEscrow(generateEscrowKeyPair().privateKey, wrap, aad), failed);
  });
});
