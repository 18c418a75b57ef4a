// What a failure means for Alibaba Cloud KMS: the service's error code, read with the HTTP
// status that @alicloud/openapi-client records beside it, or the SDK's own timeout and parse
// errors; never the message text. Socket errors are the shared rules'.
import { BackendCallError, type FailureKind } from '../call-policy.ts';
import { kindOfStatus, type StatusMeanings } from '../http-status.ts';
import type { ServiceFailures } from '../remote-caller.ts';

export const ALIBABA_KMS_SERVICE = 'Alibaba Cloud KMS';

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

/** A 401 or 408 with a code Alibaba does not list here has always been 'other'. */
const alibabaStatuses: StatusMeanings = { 401: 'other', 408: 'other' };

export const alibabaFailures: ServiceFailures = {
  classify(error) {
    const failure = error as { name?: unknown; code?: unknown; data?: { statusCode?: unknown } } | undefined;
    const status = failure?.data?.statusCode;
    const code = typeof failure?.code === 'string' ? failure.code : '';
    if (typeof status === 'number') {
      // The service's code is the cause (a safe tag), else the status is.
      const cause = safeCode.test(code) ? code : `HTTP_${status}`;
      return new BackendCallError(kindOf(code, status), cause);
    }
    if (failure?.name === 'RequestTimeoutError') return new BackendCallError('unavailable', 'TIMEOUT');
    // An error page that is not JSON (a proxy's 502) fails to parse: an outage symptom.
    if (error instanceof SyntaxError) return new BackendCallError('unavailable', 'NON_JSON_RESPONSE');
    return undefined;
  },
  unexplained: 'ALIBABA_CLIENT_ERROR',
  namesErrorCodes: false,
};

/** The code decides where it names throttling, a refused identity or a missing key; else the status. */
function kindOf(code: string, status: number): FailureKind {
  const byStatus = kindOfStatus(status, alibabaStatuses);
  if (code === 'Throttling' || code.startsWith('Throttling.') || code === 'Rejected.Throttling')
    return 'throttled';
  // An outage or throttling answer stays one, whatever its code.
  if (byStatus === 'throttled' || byStatus === 'unavailable') return byStatus;
  if (
    authCodes.has(code) ||
    code.startsWith('InvalidAccessKeyId.') ||
    code.startsWith('InvalidSecurityToken.')
  )
    return 'auth';
  if (notFoundCodes.has(code) || byStatus === 'not-found') return 'not-found';
  if (code === 'Forbidden' || code.startsWith('Forbidden.')) return 'permission';
  return byStatus;
}
