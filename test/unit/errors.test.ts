// The error catalog and the conversion of anything thrown into a BrokerError that never
// carries foreign text.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  BrokerError,
  errorCatalog,
  GrpcCode,
  isBrokerError,
  toBrokerError,
  type ErrorCode,
} from '../../src/errors.ts';

const codes = Object.keys(errorCatalog) as ErrorCode[];
const grpcCodes = new Set<number>(Object.values(GrpcCode));

describe('error catalog', () => {
  it('maps every code to a known gRPC status and an HTTP error status', () => {
    assert.ok(codes.length > 0);
    for (const code of codes) {
      const entry = errorCatalog[code];
      assert.ok(grpcCodes.has(entry.grpc), `${code}: gRPC ${entry.grpc}`);
      assert.ok(
        Number.isInteger(entry.http) && entry.http >= 400 && entry.http <= 599,
        `${code}: HTTP ${entry.http}`,
      );
      assert.ok(entry.title.length > 0, `${code}: no title`);
    }
  });

  it('pins the mappings that clients and the apiserver rely on', () => {
    const expected: [ErrorCode, number, number][] = [
      ['INVALID_REQUEST', GrpcCode.INVALID_ARGUMENT, 400],
      ['INVALID_CIPHERTEXT', GrpcCode.INVALID_ARGUMENT, 400],
      ['BACKEND_UNAVAILABLE', GrpcCode.UNAVAILABLE, 503],
      ['DEADLINE_EXCEEDED', GrpcCode.DEADLINE_EXCEEDED, 504],
      ['INTERNAL', GrpcCode.INTERNAL, 500],
    ];
    for (const [code, grpc, http] of expected) {
      assert.deepEqual([errorCatalog[code].grpc, errorCatalog[code].http], [grpc, http], code);
    }
  });

  it('gives each BrokerError the gRPC code and HTTP status of its catalog entry', () => {
    for (const code of codes) {
      const error = new BrokerError(code, 'message');
      assert.equal(error.grpcCode, errorCatalog[code].grpc);
      assert.equal(error.httpStatus, errorCatalog[code].http);
      assert.equal(error.name, 'BrokerError');
      assert.ok(error instanceof Error);
    }
  });
});

describe('toBrokerError', () => {
  it('returns a BrokerError unchanged (same object)', () => {
    const original = new BrokerError('STATE_MISMATCH', 'backend hsm: mismatch', 'CAUSE');
    assert.equal(toBrokerError(original), original);
  });

  it('recognises a BrokerError by its brand, also from another copy of the module', () => {
    const lookalike = Object.assign(new Error('x'), { [Symbol.for('kms-broker.error')]: true });
    assert.ok(isBrokerError(lookalike));
    assert.equal(isBrokerError(new Error('x')), false);
    assert.equal(isBrokerError(null), false);
    assert.equal(isBrokerError('BrokerError'), false);
  });

  const foreign: { name: string; value: unknown; causeName: string }[] = [
    { name: 'an Error', value: new Error('pin 1234 rejected by /dev/secret'), causeName: 'Error' },
    { name: 'a TypeError', value: new TypeError('pin 1234 rejected by /dev/secret'), causeName: 'TypeError' },
    {
      name: 'an error with its own name',
      value: Object.assign(new Error('pin 1234 rejected by /dev/secret'), { name: 'Pkcs11Error' }),
      causeName: 'Pkcs11Error',
    },
    { name: 'a thrown string', value: 'pin 1234 rejected by /dev/secret', causeName: 'string' },
    { name: 'a thrown object', value: { message: 'pin 1234 rejected by /dev/secret' }, causeName: 'object' },
    { name: 'undefined', value: undefined, causeName: 'undefined' },
  ];
  for (const { name, value, causeName } of foreign) {
    it(`turns ${name} into INTERNAL 'internal error', naming only its type`, () => {
      const error = toBrokerError(value);
      assert.ok(error instanceof BrokerError);
      assert.equal(error.code, 'INTERNAL');
      assert.equal(error.message, 'internal error');
      assert.equal(error.causeName, causeName);
      assert.doesNotMatch(
        JSON.stringify({ ...error, message: error.message, stack: error.stack }),
        /1234|secret/,
      );
    });
  }
});
