// What a failure means for Key Vault beyond the shared HTTP-status table and socket codes:
// the @azure/identity error types, and the pipeline's name for a request that got no answer.
// Never the message text, which carries request details and is not ours to show.
import { BackendCallError } from '../call-policy.ts';
import { statusFailure } from '../http-status.ts';
import type { ServiceFailures } from '../remote-caller.ts';

/** @azure/identity's error types, by `name` (instanceof breaks across duplicated copies). */
const credentialErrors: ReadonlySet<string> = new Set([
  'AuthenticationError',
  'AggregateAuthenticationError',
  'CredentialUnavailableError',
  'AuthenticationRequiredError',
]);

export const azureFailures: ServiceFailures = {
  classify(error) {
    const { name, code } = (error ?? {}) as { name?: unknown; code?: unknown };
    if (typeof name === 'string' && credentialErrors.has(name))
      return classifyCredentialError(error as Error);
    // The pipeline's own name for a request that never got an answer (TLS failure, DNS, ...).
    if (code === 'REQUEST_SEND_ERROR') return new BackendCallError('unavailable', code);
    return undefined;
  },
  unexplained: 'AZURE_CLIENT_ERROR',
  namesErrorCodes: true,
};

/**
 * A token request refused by Entra ID is a credential problem; one that met an outage or
 * throttling is not. The HTTP status is on the error, or on MSAL's error it wraps as `cause`.
 */
function classifyCredentialError(error: Error): BackendCallError {
  const { statusCode, cause } = error as { statusCode?: unknown; cause?: { status?: unknown } };
  const status = typeof statusCode === 'number' ? statusCode : cause?.status;
  if (typeof status === 'number' && (status === 429 || status >= 500))
    return statusFailure(status, {}, 'TOKEN_');
  if (error.name === 'CredentialUnavailableError')
    return new BackendCallError('auth', 'CREDENTIAL_UNAVAILABLE');
  return new BackendCallError(
    'auth',
    typeof status === 'number' && status > 0 ? `TOKEN_HTTP_${status}` : 'TOKEN_REFUSED',
  );
}
