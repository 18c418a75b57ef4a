// Alibaba Cloud KMS failures by kind: from the service's error code and the HTTP status
// that @alicloud/openapi-client records beside it, or from the socket or timeout error
// underneath; never from message text.
import { BackendCallError, transientSocketErrors } from '../call-policy.ts';

/** Codes that mean the caller's identity itself was refused (common to Alibaba Cloud APIs). */
const authCodes: ReadonlySet<string> = new Set([
  'InvalidAccessKeyId.NotFound',
  'InvalidAccessKeyId.Inactive',
  'InvalidAccessKeyId',
  'SignatureDoesNotMatch',
  'IncompleteSignature',
  'InvalidSecurityToken.Expired',
  'InvalidSecurityToken.Malformed',
  'InvalidSecurityToken.MismatchWithAccessKey',
  'Forbidden.AccessKey',
  'Forbidden.AccessKeyDisabled',
  'IllegalTimestamp',
  'RequestTimeTooSkewed',
]);

/** Forbidden.* codes that name a missing resource rather than a missing permission. */
const notFoundCodes: ReadonlySet<string> = new Set([
  'Forbidden.KeyNotFound',
  'Forbidden.AliasNotFound',
  'Forbidden.ResourceNotFound',
]);

/** A service code is a safe tag for logs and errors; anything else is replaced by the status. */
const safeCode = /^[A-Za-z][A-Za-z0-9.]{0,63}$/;

export function classifyAlibabaError(error: unknown): BackendCallError {
  if (error instanceof BackendCallError) return error;
  const failure = error as { name?: unknown; code?: unknown; data?: { statusCode?: unknown } };
  const status = typeof failure.data?.statusCode === 'number' ? failure.data.statusCode : undefined;
  const code = typeof failure.code === 'string' ? failure.code : '';
  if (status !== undefined) {
    const cause = safeCode.test(code) ? code : `HTTP_${status}`;
    return new BackendCallError(kindOf(code, status), cause);
  }
  if (failure.name === 'RequestTimeoutError') return new BackendCallError('unavailable', 'TIMEOUT');
  if (transientSocketErrors.has(code)) return new BackendCallError('unavailable', code);
  // An error page that is not JSON (a proxy's 502) fails to parse: an outage symptom.
  if (error instanceof SyntaxError) return new BackendCallError('unavailable', 'NON_JSON_RESPONSE');
  return new BackendCallError('other', 'ALIBABA_CLIENT_ERROR');
}

function kindOf(code: string, status: number): BackendCallError['kind'] {
  if (
    code === 'Throttling' ||
    code.startsWith('Throttling.') ||
    code === 'Rejected.Throttling' ||
    status === 429
  )
    return 'throttled';
  if (status >= 500) return 'unavailable';
  if (
    authCodes.has(code) ||
    code.startsWith('InvalidAccessKeyId.') ||
    code.startsWith('InvalidSecurityToken.')
  )
    return 'auth';
  if (notFoundCodes.has(code) || status === 404) return 'not-found';
  if (code === 'Forbidden' || code.startsWith('Forbidden.') || status === 403) return 'permission';
  if (status === 400 || status === 409) return 'rejected';
  return 'other';
}
