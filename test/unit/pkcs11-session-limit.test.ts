import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { poolSizeFor } from '../../src/backends/pkcs11/session-limit.ts';

describe('PKCS#11 pool size from the token caps', () => {
  it('keeps the configured size when the token states no cap (SoftHSM: 0, or ~0 unavailable)', () => {
    assert.deepEqual(poolSizeFor(8, { maxSessionCount: 0, maxRwSessionCount: 0 }), { size: 8 });
    assert.deepEqual(poolSizeFor(8, { maxSessionCount: 2 ** 64 - 1, maxRwSessionCount: 0 }), { size: 8 });
  });

  it('stays under a YubiHSM 2 (16 sessions): the anchor and a quarter of the cap kept back', () => {
    assert.deepEqual(poolSizeFor(64, { maxSessionCount: 16, maxRwSessionCount: 16 }), {
      size: 11,
      tokenCap: 16,
    });
    assert.deepEqual(poolSizeFor(4, { maxSessionCount: 16, maxRwSessionCount: 16 }), { size: 4 });
  });

  it('takes the smaller of the session and read/write caps', () => {
    assert.deepEqual(poolSizeFor(32, { maxSessionCount: 1024, maxRwSessionCount: 8 }), {
      size: 5,
      tokenCap: 8,
    });
  });

  it('never goes below one session, even on a token that allows two', () => {
    assert.deepEqual(poolSizeFor(4, { maxSessionCount: 2, maxRwSessionCount: 0 }), { size: 1, tokenCap: 2 });
  });
});
