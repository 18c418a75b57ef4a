// CryptoKeyVersion names and identities: the short number recorded in envelopes, and a
// fingerprint that changes when a key is recreated under the same name.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { versionId, versionInfo } from '../../src/backends/gcp-kms/gcp-kms-versions.ts';
import { brokerError } from './expect-error.ts';

const KEY = 'projects/p/locations/global/keyRings/r/cryptoKeys/kek';

describe('Cloud KMS key versions', () => {
  it('takes the version number only from a version of the configured key', () => {
    assert.equal(versionId(KEY, `${KEY}/cryptoKeyVersions/12`), 12);
    assert.equal(versionId(KEY, `${KEY}2/cryptoKeyVersions/12`), undefined);
    assert.equal(versionId(KEY, `${KEY}/cryptoKeyVersions/0`), undefined);
    assert.equal(versionId(KEY, `${KEY}/cryptoKeyVersions/x`), undefined);
    assert.equal(versionId(KEY, null), undefined);
  });

  it('records the short number, the creation time, and a fingerprint that tells a recreated key apart', () => {
    const created = { seconds: '1700000000', nanos: 5000000 };
    const info = versionInfo(KEY, { name: `${KEY}/cryptoKeyVersions/3`, createTime: created }, 'gcp');
    assert.equal(info.version, '3');
    assert.equal(info.createdAt, '2023-11-14T22:13:20.005Z');
    const recreated = versionInfo(
      KEY,
      { name: `${KEY}/cryptoKeyVersions/3`, createTime: { ...created, nanos: 5000001 } },
      'gcp',
    );
    assert.notEqual(recreated.fingerprint, info.fingerprint);
    assert.equal(
      versionInfo(KEY, { name: `${KEY}/cryptoKeyVersions/3`, createTime: created }, 'gcp').fingerprint,
      info.fingerprint,
    );
  });

  it('refuses a version of another key in a response', () => {
    assert.throws(
      () =>
        versionInfo(
          KEY,
          { name: 'projects/p/locations/global/keyRings/r/cryptoKeys/other/cryptoKeyVersions/1' },
          'gcp',
        ),
      brokerError('BACKEND_UNAVAILABLE', 'a version of another key'),
    );
  });
});
