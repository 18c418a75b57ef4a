// Cloud KMS failures classified by kind (gRPC status, token endpoint HTTP status, socket
// code), never by message text; and the CRC32C the backend checks requests and responses with.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { status as GrpcStatus } from '@grpc/grpc-js';
import { crc32c } from '../../src/backends/gcp-kms/crc32c.ts';
import { gcpFailures } from '../../src/backends/gcp-kms/gcp-kms-errors.ts';
import type { FailureKind } from '../../src/backends/call-policy.ts';
import { classifyFailure } from '../../src/backends/remote-caller.ts';

/** Cloud KMS's own meanings first, then the shared rules, as every call reads them. */
const classifyGcpError = (error: unknown) => classifyFailure(error, gcpFailures);

/** A grpc-js ServiceError as the client library rejects with it. */
function grpcError(code: GrpcStatus, details = 'some text Google may change'): Error {
  return Object.assign(new Error(`${code} ${GrpcStatus[code]}: ${details}`), { code, details });
}

describe('Cloud KMS error classification', () => {
  const byCode: [GrpcStatus, FailureKind][] = [
    [GrpcStatus.RESOURCE_EXHAUSTED, 'throttled'],
    [GrpcStatus.UNAVAILABLE, 'unavailable'],
    [GrpcStatus.DEADLINE_EXCEEDED, 'unavailable'],
    [GrpcStatus.INTERNAL, 'unavailable'],
    [GrpcStatus.PERMISSION_DENIED, 'permission'],
    [GrpcStatus.UNAUTHENTICATED, 'auth'],
    [GrpcStatus.NOT_FOUND, 'not-found'],
    [GrpcStatus.INVALID_ARGUMENT, 'rejected'],
    [GrpcStatus.FAILED_PRECONDITION, 'rejected'],
    [GrpcStatus.UNKNOWN, 'other'],
  ];
  for (const [code, kind] of byCode) {
    it(`classifies ${GrpcStatus[code]} as ${kind}, tagged by the code alone`, () => {
      const failure = classifyGcpError(grpcError(code));
      assert.equal(failure.kind, kind);
      assert.equal(failure.cause, `GRPC_${GrpcStatus[code]}`);
      assert.ok(!failure.message.includes('Google may change'));
    });
  }

  it('classifies token endpoint answers by HTTP status, even when `code` repeats it', () => {
    const http = (status: number) => Object.assign(new Error('invalid_grant'), { status, code: status });
    assert.deepEqual(
      [400, 401, 403, 429, 503].map(status => [
        classifyGcpError(http(status)).kind,
        classifyGcpError(http(status)).cause,
      ]),
      [
        ['auth', 'TOKEN_HTTP_400'],
        ['auth', 'TOKEN_HTTP_401'],
        ['permission', 'TOKEN_HTTP_403'],
        ['throttled', 'TOKEN_HTTP_429'],
        ['unavailable', 'TOKEN_HTTP_503'],
      ],
    );
  });

  it('classifies socket failures as unavailable and names node error codes', () => {
    assert.equal(
      classifyGcpError(Object.assign(new Error('x'), { code: 'ECONNREFUSED' })).kind,
      'unavailable',
    );
    const missing = classifyGcpError(Object.assign(new Error('x'), { code: 'ENOENT' }));
    assert.deepEqual([missing.kind, missing.cause], ['other', 'ENOENT']);
    assert.equal(classifyGcpError(new Error('anything')).cause, 'GCP_CLIENT_ERROR');
    assert.equal(classifyGcpError(undefined).cause, 'GCP_CLIENT_ERROR');
  });
});

describe('CRC32C', () => {
  it('matches the Castagnoli check value and RFC 3720 test vectors', () => {
    assert.equal(crc32c(Buffer.from('123456789')), 0xe3069283);
    assert.equal(crc32c(Buffer.alloc(32, 0)), 0x8a9136aa);
    assert.equal(crc32c(Buffer.alloc(32, 0xff)), 0x62a8ab43);
    assert.equal(crc32c(Buffer.alloc(0)), 0);
  });
});
