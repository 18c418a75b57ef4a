// AWS KMS failures sorted by kind: by the error's name (AWS's `__type`), its HTTP status or
// its socket code, never by message text. The cause kept is the error's name, a fixed
// identifier safe for logs.
import { BackendCallError, transientSocketErrors, type FailureKind } from '../call-policy.ts';

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

interface SdkErrorShape {
  readonly name?: unknown;
  readonly code?: unknown;
  readonly $metadata?: { readonly httpStatusCode?: unknown };
}

export function classifyAwsError(error: unknown): BackendCallError {
  if (error instanceof BackendCallError) return error;
  const { name, code, $metadata } = (error ?? {}) as SdkErrorShape;
  const kind = typeof name === 'string' ? kindsByName[name] : undefined;
  if (kind !== undefined) return new BackendCallError(kind, name as string);
  const status = $metadata?.httpStatusCode;
  if (typeof status === 'number') {
    // An answer that is not AWS's JSON (a proxy's page, an emulator's XML): its status says enough.
    if (status === 429) return new BackendCallError('throttled', 'HTTP_429');
    if (status >= 500) return new BackendCallError('unavailable', `HTTP_${status}`);
    if (status === 401 || status === 403) return new BackendCallError('auth', `HTTP_${status}`);
    if (status === 404) return new BackendCallError('not-found', 'HTTP_404');
    return new BackendCallError('other', `HTTP_${status}`);
  }
  if (typeof code === 'string' && transientSocketErrors.has(code))
    return new BackendCallError('unavailable', code);
  if (name === 'TimeoutError' || name === 'AbortError') return new BackendCallError('unavailable', 'TIMEOUT');
  return new BackendCallError('other', 'AWS_CLIENT_ERROR');
}
