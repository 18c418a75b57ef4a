// Cloud KMS failures by kind: the gRPC status code of a call, the HTTP status of a token
// request, or a socket error code. Never by message text, which is the service's to change.
// And the start-up error for credentials that cannot be used.
import { status as GrpcStatus } from '@grpc/grpc-js';
import { BrokerError, isBrokerError } from '../../errors.ts';
import { BackendCallError, brokerErrorFor, transientSocketErrors, type FailureKind } from '../call-policy.ts';

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

export function classifyGcpError(error: unknown): BackendCallError {
  if (error instanceof BackendCallError) return error;
  const { code, status } = (error ?? {}) as { code?: unknown; status?: unknown };
  // google-auth-library's token requests (STS, metadata server) fail with an HTTP status
  // (and the same number as `code`); gRPC errors carry a `code` only.
  if (typeof status === 'number') return fromHttpStatus(status);
  if (typeof code === 'number' && Number.isInteger(code)) {
    const name = GrpcStatus[code] ?? String(code);
    return new BackendCallError(kindByGrpcCode.get(code) ?? 'other', `GRPC_${name}`);
  }
  if (typeof code === 'string' && transientSocketErrors.has(code))
    return new BackendCallError('unavailable', code);
  // Node's own codes (ENOENT for a missing credentials file, ERR_OSSL_* for a bad key).
  if (typeof code === 'string' && /^[A-Z][A-Z0-9_]{1,40}$/.test(code))
    return new BackendCallError('other', code);
  return new BackendCallError('other', 'GCP_CLIENT_ERROR');
}

function fromHttpStatus(status: number): BackendCallError {
  const cause = `TOKEN_HTTP_${status}`;
  if (status === 429) return new BackendCallError('throttled', cause);
  if (status >= 500) return new BackendCallError('unavailable', cause);
  if (status === 403) return new BackendCallError('permission', cause);
  if (status === 400 || status === 401) return new BackendCallError('auth', cause);
  return new BackendCallError('other', cause);
}

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
  const failure = classifyGcpError(error);
  if (failure.kind === 'unavailable' || failure.kind === 'throttled') {
    return brokerErrorFor(failure, { backend, service: 'Google Cloud KMS', permission: '' });
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
