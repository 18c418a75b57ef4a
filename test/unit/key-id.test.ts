// key_id: deterministic from the write keys and the generation, different whenever any of
// them differs, and recognisable by shape so Decrypt never touches foreign data.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { deriveKeyId, isOwnKeyId, KEY_ID_PREFIX, type WriteKey } from '../../src/broker/keys/key-id.ts';

const key: WriteKey = { backend: 'hsm', version: '1', fingerprint: 'pkcs11:serial:0000000101' };

describe('key_id', () => {
  it('is deterministic: the same keys and generation give the same key_id', () => {
    assert.equal(deriveKeyId([key], 0), deriveKeyId([{ ...key }], 0));
  });

  it('is the prefix kbr1- followed by 43 base64url characters (a SHA-256)', () => {
    const keyId = deriveKeyId([key], 0);
    assert.equal(KEY_ID_PREFIX, 'kbr1-');
    assert.match(keyId, /^kbr1-[A-Za-z0-9_-]{43}$/);
    assert.equal(keyId.length, 48);
  });

  const changes: { what: string; keys: WriteKey[]; generation: number }[] = [
    { what: 'backend', keys: [{ ...key, backend: 'hsm2' }], generation: 0 },
    { what: 'version', keys: [{ ...key, version: '2' }], generation: 0 },
    {
      what: 'fingerprint (a key recreated under the same version)',
      keys: [{ ...key, fingerprint: 'x' }],
      generation: 0,
    },
    { what: 'generation', keys: [key], generation: 1 },
    { what: 'set of write keys', keys: [key, { ...key, backend: 'hsm2' }], generation: 0 },
  ];
  for (const { what, keys, generation } of changes) {
    it(`changes when the ${what} changes`, () => {
      assert.notEqual(deriveKeyId(keys, generation), deriveKeyId([key], 0));
    });
  }

  it('does not confuse field boundaries (backend "a-b" version "c" vs backend "a" version "b-c")', () => {
    const left = deriveKeyId([{ backend: 'a-b', version: 'c', fingerprint: 'f' }], 0);
    const right = deriveKeyId([{ backend: 'a', version: 'b-c', fingerprint: 'f' }], 0);
    assert.notEqual(left, right);
  });

  describe('isOwnKeyId', () => {
    it('accepts every key_id the broker derives', () => {
      for (let generation = 0; generation < 50; generation++) {
        const keyId = deriveKeyId([{ ...key, version: String(generation) }], generation);
        assert.ok(isOwnKeyId(keyId), keyId);
      }
    });

    const issued = deriveKeyId([key], 0);
    const foreign: { name: string; keyId: string }[] = [
      { name: 'empty', keyId: '' },
      { name: 'another plugin’s id', keyId: 'kms-test' },
      { name: 'the bare prefix', keyId: KEY_ID_PREFIX },
      { name: 'one character short', keyId: issued.slice(0, -1) },
      { name: 'one character long', keyId: issued + 'A' },
      { name: 'a wrong prefix of the right length', keyId: 'kbr2-' + issued.slice(KEY_ID_PREFIX.length) },
      { name: 'the prefix in the wrong case', keyId: 'KBR1-' + issued.slice(KEY_ID_PREFIX.length) },
      { name: 'a hash part that is not base64url', keyId: issued.slice(0, -1) + '=' },
    ];
    for (const { name, keyId } of foreign) {
      it(`rejects ${name}`, () => {
        assert.equal(isOwnKeyId(keyId), false);
      });
    }
  });
});
