// What went wrong in a Key Vault call, told by the HTTP status of the service's answer, the
// socket error code, or the @azure/identity error type: never by message text, which
// carries request details and is not ours to show.
import { BackendCallError, transientSocketErrors } from '../call-policy.ts';

/** @azure/identity's error types, by `name` (instanceof breaks across duplicated copies). */
const credentialErrors: ReadonlySet<string> = new Set([
  'AuthenticationError',
  'AggregateAuthenticationError',
  'CredentialUnavailableError',
  'AuthenticationRequiredError',
]);

export function classifyAzureError(error: unknown): BackendCallError {
  if (error instanceof BackendCallError) return error;
  const { name, statusCode, code } = (error ?? {}) as {
    name?: unknown;
    statusCode?: unknown;
    code?: unknown;
  };
  if (typeof name === 'string' && credentialErrors.has(name)) return classifyCredentialError(error as Error);
  if (typeof statusCode === 'number') return classifyStatus(statusCode, '');
  if (typeof code === 'string' && transientSocketErrors.has(code))
    return new BackendCallError('unavailable', code);
  // The pipeline's own name for a request that never got an answer (TLS failure, DNS, ...).
  if (code === 'REQUEST_SEND_ERROR') return new BackendCallError('unavailable', code);
  if (typeof code === 'string' && /^[A-Z][A-Z0-9_]{1,40}$/.test(code))
    return new BackendCallError('other', code);
  return new BackendCallError('other', 'AZURE_CLIENT_ERROR');
}

/**
 * A token request refused by Entra ID is a credential problem; one that met an outage or
 * throttling is not. The HTTP status is on the error, or on MSAL's error it wraps as `cause`.
 */
function classifyCredentialError(error: Error): BackendCallError {
  const { statusCode, cause } = error as { statusCode?: unknown; cause?: { status?: unknown } };
  const status = typeof statusCode === 'number' ? statusCode : cause?.status;
  if (typeof status === 'number' && (status === 429 || status >= 500))
    return classifyStatus(status, 'TOKEN_');
  if (error.name === 'CredentialUnavailableError')
    return new BackendCallError('auth', 'CREDENTIAL_UNAVAILABLE');
  return new BackendCallError(
    'auth',
    typeof status === 'number' && status > 0 ? `TOKEN_HTTP_${status}` : 'TOKEN_REFUSED',
  );
}

function classifyStatus(status: number, prefix: string): BackendCallError {
  const cause = `${prefix}HTTP_${status}`;
  if (status === 429) return new BackendCallError('throttled', cause);
  if (status >= 500 || status === 408) return new BackendCallError('unavailable', cause);
  if (status === 401) return new BackendCallError('auth', cause);
  if (status === 403) return new BackendCallError('permission', cause);
  if (status === 404) return new BackendCallError('not-found', cause);
  if (status === 400 || status === 409) return new BackendCallError('rejected', cause);
  return new BackendCallError('other', cause);
}
