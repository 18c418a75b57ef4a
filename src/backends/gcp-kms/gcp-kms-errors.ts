// What a failure means for Cloud KMS: the gRPC status code of a call, or the HTTP status of
// a token request, never the message text, which is the service's to change. Socket errors
// are the shared rules'. And the start-up error for credentials that cannot be used.
import { status as GrpcStatus } from '@grpc/grpc-js';
import { BrokerError, isBrokerError } from '../../errors.ts';
import { BackendCallError, brokerErrorFor, type FailureKind } from '../call-policy.ts';
import { statusFailure, type StatusMeanings } from '../http-status.ts';
import { classifyFailure, type ServiceFailures } from '../remote-caller.ts';

export const GCP_KMS_SERVICE = 'Google Cloud KMS';

const kindByGrpcCode: ReadonlyMap<number, FailureKind> = new Map([
  [GrpcStatus.RESOURCE_EXHAUSTED, 'throttled'],
  [GrpcStatus.UNAVAILABLE, 'unavailable'],
  [GrpcStatus.DEADLINE_EXCEEDED, 'unavailable'],
  [GrpcStatus.INTERNAL, 'unavailable'],
  [GrpcStatus.ABORTED, 'unavailable'],
  [GrpcStatus.CANCELLED, 'unavailable'],
  [GrpcStatus.PERMISSION_DENIED, 'permission'],
  [GrpcStatus.UNAUTHENTICATED, 'auth'],
  [GrpcStatus.NOT_FOUND, 'not-found'],
  // Decrypt answers INVALID_ARGUMENT for a ciphertext it cannot open; the backend says so.
  [GrpcStatus.INVALID_ARGUMENT, 'rejected'],
  // A disabled or destroyed key version, or a key of the wrong purpose.
  [GrpcStatus.FAILED_PRECONDITION, 'rejected'],
  [GrpcStatus.ALREADY_EXISTS, 'rejected'],
]);

/**
 * A token endpoint (STS, the metadata server) answers a refused grant with 400: a credential
 * problem, where the table reads a rejected request. Its 404, 408 and 409 say nothing about
 * the key and have always been 'other' here.
 */
const tokenStatuses: StatusMeanings = { 400: 'auth', 404: 'other', 408: 'other', 409: 'other' };

export const gcpFailures: ServiceFailures = {
  classify(error) {
    const { code, status } = (error ?? {}) as { code?: unknown; status?: unknown };
    // google-auth-library's token requests fail with an HTTP status (and the same number as
    // `code`); gRPC errors carry a `code` only.
    if (typeof status === 'number') return statusFailure(status, tokenStatuses, 'TOKEN_');
    if (typeof code === 'number' && Number.isInteger(code)) {
      const name = GrpcStatus[code] ?? String(code);
      return new BackendCallError(kindByGrpcCode.get(code) ?? 'other', `GRPC_${name}`);
    }
    return undefined;
  },
  unexplained: 'GCP_CLIENT_ERROR',
  namesErrorCodes: true,
};

/** Why the credentials could not be used at start-up, as the broker error that says so. */
export function credentialError(error: unknown, backend: string, timeoutMs: number): BrokerError {
  const source = 'the credentials (credentialsFile, or Application Default Credentials)';
  if (isBrokerError(error)) {
    if (error.code !== 'DEADLINE_EXCEEDED') return error;
    return new BrokerError(
      'BACKEND_UNAVAILABLE',
      `backend ${backend}: ${source} could not be loaded within ${timeoutMs} ms; is the metadata server or token endpoint reachable?`,
      error.code,
    );
  }
  const failure = classifyFailure(error, gcpFailures);
  if (failure.kind === 'unavailable' || failure.kind === 'throttled') {
    return brokerErrorFor(failure, { backend, service: GCP_KMS_SERVICE, permission: '' });
  }
  if (failure.cause === 'ENOENT' || failure.cause === 'EACCES')
    return new BrokerError(
      'SECRET_UNREADABLE',
      `backend ${backend}: cannot read ${source} (${failure.cause})`,
    );
  return new BrokerError(
    'BACKEND_AUTH_FAILED',
    `backend ${backend}: ${source} were refused or are not usable (${failure.cause})`,
    failure.cause,
  );
}
