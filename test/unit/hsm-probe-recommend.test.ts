// What `hsm-probe` recommends from the trials' outcomes: the order of preference, the keys
// that only one mechanism reads, sessions under a token cap, and nothing when nothing works.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { TrialResult } from '../../src/backends/pkcs11/probe/mechanism-trials.ts';
import { recommend, type ProbeTarget } from '../../src/backends/pkcs11/probe/recommend.ts';
import type { SessionReport } from '../../src/backends/pkcs11/probe/token-report.ts';

const target: ProbeTarget = {
  name: 'hsm',
  module: '/usr/lib/vendor/libpkcs11.so',
  token: { tokenSerial: '1234' },
  pin: { pinEnv: 'HSM_PIN' },
  keyLabel: 'kek',
};
const noCap: SessionReport = {
  maxSessions: 0,
  maxRwSessions: 0,
  openSessions: null,
  openRwSessions: null,
  cap: null,
  brokerPoolLimit: null,
  defaultPoolSize: 4,
};

const ok = (trial: Omit<TrialResult, 'outcome'>): TrialResult => ({ ...trial, outcome: 'ok', ms: 1 });
const refused = (trial: Omit<TrialResult, 'outcome'>): TrialResult => ({
  ...trial,
  outcome: 'refused',
  reason: 'CKR_MECHANISM_INVALID',
});

describe('hsm-probe recommendation', () => {
  it('prefers aes-gcm, and names only the keys a backend needs', () => {
    const trials = [
      ok({ mechanism: 'aes-gcm' }),
      ok({ mechanism: 'aes-gcm-hsm-iv' }),
      ok({ mechanism: 'aes-kwp', kwpMechanism: 0x210b }),
    ];
    assert.deepEqual(recommend(trials, noCap, target, true)?.backend, {
      name: 'hsm',
      type: 'pkcs11',
      module: '/usr/lib/vendor/libpkcs11.so',
      tokenSerial: '1234',
      pinEnv: 'HSM_PIN',
      keyLabel: 'kek',
      mechanism: 'aes-gcm',
      sessions: 4,
    });
  });

  it('asks the broker to create the key when the token holds none of that label', () => {
    assert.equal(
      recommend([ok({ mechanism: 'aes-gcm' })], noCap, target, false)?.backend.generateIfMissing,
      true,
    );
  });

  it('falls back to the token IV, then AES-KWP (its constant only when not 0x210A), then RSA-OAEP', () => {
    const hostRefused = refused({ mechanism: 'aes-gcm' });
    assert.equal(
      recommend([hostRefused, ok({ mechanism: 'aes-gcm-hsm-iv' })], noCap, target, true)?.backend.mechanism,
      'aes-gcm-hsm-iv',
    );
    const kwp = (constant: number) =>
      recommend([hostRefused, ok({ mechanism: 'aes-kwp', kwpMechanism: constant })], noCap, target, true)
        ?.backend;
    assert.equal(kwp(0x210a)?.kwpMechanism, undefined);
    assert.equal(kwp(0x210b)?.kwpMechanism, 0x210b);
    const rsa = recommend(
      [
        hostRefused,
        refused({ mechanism: 'rsa-oaep', oaepHash: 'sha256' }),
        ok({ mechanism: 'rsa-oaep', oaepHash: 'sha1' }),
      ],
      noCap,
      target,
      true,
    )?.backend;
    assert.deepEqual([rsa?.mechanism, rsa?.oaepHash], ['rsa-oaep', 'sha1']);
  });

  it('sizes sessions as the broker would under the token cap', () => {
    const capped: SessionReport = {
      ...noCap,
      maxSessions: 4,
      maxRwSessions: 4,
      cap: 4,
      brokerPoolLimit: 2,
      defaultPoolSize: 2,
    };
    assert.equal(recommend([ok({ mechanism: 'aes-gcm' })], capped, target, true)?.backend.sessions, 2);
  });

  it('recommends nothing when no mechanism round-trips', () => {
    const trials: TrialResult[] = [
      refused({ mechanism: 'aes-gcm' }),
      { mechanism: 'aes-kwp', kwpMechanism: 0x210a, outcome: 'not-offered', reason: 'CKM_AES_KEY_WRAP_PAD' },
      { mechanism: 'aes-gcm-hsm-iv', outcome: 'failed', reason: 'WRONG_HEADER_ACCEPTED', ms: 1 },
    ];
    assert.equal(recommend(trials, noCap, target, true), undefined);
  });
});
