// What a failure means for AWS KMS: the error's name (AWS's `__type`), a fixed identifier
// safe for logs and kept as the cause, and the statuses AWS reads otherwise than the shared
// table does. Never the message text. Socket errors and other statuses are the shared rules'.
import { BackendCallError, type FailureKind } from '../call-policy.ts';
import { httpStatusOf, ownStatusFailure, type StatusMeanings } from '../http-status.ts';
import type { ServiceFailures } from '../remote-caller.ts';

const kindsByName: Readonly<Record<string, FailureKind>> = {
  ThrottlingException: 'throttled',
  Throttling: 'throttled',
  TooManyRequestsException: 'throttled',
  RequestLimitExceeded: 'throttled',
  KMSInternalException: 'unavailable',
  DependencyTimeoutException: 'unavailable',
  InternalFailure: 'unavailable',
  ServiceUnavailable: 'unavailable',
  // Key material in an external or CloudHSM key store that cannot be reached right now.
  KeyUnavailableException: 'unavailable',
  AccessDeniedException: 'permission',
  UnrecognizedClientException: 'auth',
  InvalidSignatureException: 'auth',
  IncompleteSignature: 'auth',
  InvalidClientTokenId: 'auth',
  ExpiredTokenException: 'auth',
  MissingAuthenticationToken: 'auth',
  // The SDK's own: no credentials could be loaded from the configured source or chain.
  CredentialsProviderError: 'auth',
  NotFoundException: 'not-found',
  InvalidCiphertextException: 'invalid-ciphertext',
  IncorrectKeyException: 'invalid-ciphertext',
  DisabledException: 'rejected',
  KMSInvalidStateException: 'rejected',
  InvalidKeyUsageException: 'rejected',
  ValidationException: 'rejected',
  InvalidArnException: 'rejected',
  InvalidAliasNameException: 'rejected',
  LimitExceededException: 'rejected',
  TagException: 'rejected',
};

/**
 * An answer that is not AWS's JSON (a proxy's page, an emulator's XML) has only its status.
 * AWS signs every request, so a 403 there is a refused signature or key id, as moto's IAM
 * checks answer: auth, where the table reads permission. A 400, 408 or 409 without a known
 * name has always been 'other' here.
 */
const awsStatuses: StatusMeanings = { 403: 'auth', 400: 'other', 408: 'other', 409: 'other' };

export const awsFailures: ServiceFailures = {
  classify(error) {
    const { name } = (error ?? {}) as { name?: unknown };
    const kind = typeof name === 'string' ? kindsByName[name] : undefined;
    if (kind !== undefined) return new BackendCallError(kind, name as string);
    const status = httpStatusOf(error);
    if (status !== undefined) return ownStatusFailure(status, awsStatuses);
    // The SDK's request handler names its own timeouts and our aborts; they carry no code.
    if (name === 'TimeoutError' || name === 'AbortError')
      return new BackendCallError('unavailable', 'TIMEOUT');
    return undefined;
  },
  unexplained: 'AWS_CLIENT_ERROR',
  namesErrorCodes: false,
};
