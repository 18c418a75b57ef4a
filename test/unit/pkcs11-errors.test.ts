// PKCS#11 failures classified into what the backend does about them, from the messages
// pkcs11js produces: the native "CKR_NAME:value" text and its Pkcs11Error (message "CKR_NAME").
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import pkcs11js from 'pkcs11js';
import {
  ckrName,
  classify,
  classifyName,
  isRecoverable,
  type Pkcs11Failure,
} from '../../src/backends/pkcs11/pkcs11-errors.ts';

// Names with their CK_RV values (pkcs11t.h), so the messages are the ones pkcs11js produces.
const cases: [name: string, value: number, failure: Pkcs11Failure][] = [
  ['CKR_SESSION_HANDLE_INVALID', 0xb3, 'session'],
  ['CKR_SESSION_CLOSED', 0xb0, 'session'],
  ['CKR_SESSION_COUNT', 0xb1, 'session'],
  ['CKR_USER_NOT_LOGGED_IN', 0x101, 'login'],
  ['CKR_OBJECT_HANDLE_INVALID', 0x82, 'login'],
  ['CKR_KEY_HANDLE_INVALID', 0x60, 'login'],
  ['CKR_DEVICE_REMOVED', 0x32, 'device'],
  ['CKR_DEVICE_ERROR', 0x30, 'device'],
  ['CKR_DEVICE_MEMORY', 0x31, 'device'],
  ['CKR_TOKEN_NOT_PRESENT', 0xe0, 'device'],
  ['CKR_TOKEN_NOT_RECOGNIZED', 0xe1, 'device'],
  ['CKR_CRYPTOKI_NOT_INITIALIZED', 0x190, 'device'],
  ['CKR_SLOT_ID_INVALID', 0x3, 'device'],
  // What SoftHSM answers for every call once the token's storage went away (issue 13).
  ['CKR_GENERAL_ERROR', 0x5, 'device'],
  ['CKR_ENCRYPTED_DATA_INVALID', 0x40, 'data'],
  ['CKR_ENCRYPTED_DATA_LEN_RANGE', 0x41, 'data'],
  ['CKR_PIN_INCORRECT', 0xa0, 'pin'],
  ['CKR_PIN_LOCKED', 0xa4, 'pin'],
  ['CKR_PIN_EXPIRED', 0xa3, 'pin'],
  ['CKR_PIN_INVALID', 0xa1, 'pin'],
  ['CKR_PIN_LEN_RANGE', 0xa2, 'pin'],
  ['CKR_FUNCTION_FAILED', 0x6, 'other'],
  ['CKR_USER_ALREADY_LOGGED_IN', 0x100, 'other'],
  ['CKR_VENDOR_DEFINED', 0x80000000, 'other'],
];

describe('PKCS#11 error classification', () => {
  for (const [name, value, failure] of cases) {
    it(`classifies ${name} as '${failure}'`, () => {
      const forms = [
        new Error(`${name}:${value}`), // as the native addon throws it
        new pkcs11js.Pkcs11Error(`${name}:${value}`), // as pkcs11js rethrows it
        new Error(`${name}: described by the broker`), // as the backend raises its own
      ];
      for (const error of forms) {
        assert.equal(ckrName(error), name, error.message);
        assert.equal(classify(error), failure, error.message);
      }
    });
  }

  const foreign: { name: string; value: unknown }[] = [
    { name: 'a plain Error', value: new Error('socket hang up') },
    { name: 'a TypeError from pkcs11js argument checks', value: new TypeError('Parameter 1 MUST be Buffer') },
    { name: 'a non-PKCS#11 NativeError', value: new pkcs11js.NativeError('dlopen failed') },
    { name: 'a lowercase lookalike', value: new Error('ckr_session_closed:176') },
    { name: 'a CKR_ name glued to a word', value: new Error('XCKR_DEVICE_ERROR') },
    { name: 'a string with a CKR_ name (not an Error)', value: 'CKR_DEVICE_ERROR:48' },
    { name: 'undefined', value: undefined },
  ];
  for (const { name, value } of foreign) {
    it(`classifies ${name} as 'other' with no CKR_ name`, () => {
      assert.equal(ckrName(value), undefined);
      assert.equal(classify(value), 'other');
    });
  }

  // An outage must answer UNAVAILABLE and start a recovery, never blame the caller's data.
  const availability = [
    'CKR_GENERAL_ERROR',
    'CKR_DEVICE_ERROR',
    'CKR_DEVICE_MEMORY',
    'CKR_DEVICE_REMOVED',
    'CKR_TOKEN_NOT_PRESENT',
    'CKR_TOKEN_NOT_RECOGNIZED',
    'CKR_SESSION_HANDLE_INVALID',
    'CKR_SESSION_CLOSED',
    'CKR_USER_NOT_LOGGED_IN',
    'CKR_OBJECT_HANDLE_INVALID',
    'CKR_KEY_HANDLE_INVALID',
    'CKR_CRYPTOKI_NOT_INITIALIZED',
  ];
  for (const name of availability) {
    it(`treats ${name} as an availability failure that starts a recovery`, () => {
      assert.ok(isRecoverable(classify(new Error(`${name}:1`))));
      assert.ok(isRecoverable(classifyName(name)));
    });
  }

  it('never recovers (and so never retries) a PIN failure, data failure or unknown error', () => {
    for (const failure of ['pin', 'data', 'other', undefined] as const)
      assert.equal(isRecoverable(failure), false);
  });

  it('classifies a cause name as a BrokerError carries it', () => {
    assert.equal(classifyName('CKR_PIN_INCORRECT'), 'pin');
    assert.equal(classifyName('HSM_TOKEN_NOT_FOUND'), 'other');
    assert.equal(classifyName(undefined), 'other');
  });

  it('extracts only the CKR_ name from a longer message', () => {
    const error = new Error('C_Decrypt failed: CKR_ENCRYPTED_DATA_INVALID:64 (pin 1234)\n    at native');
    assert.equal(ckrName(error), 'CKR_ENCRYPTED_DATA_INVALID');
    assert.equal(classify(error), 'data');
  });
});
