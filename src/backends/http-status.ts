// What an HTTP status means, the same for every remote key service. A backend whose service
// means something else by a status says so in its own hook (see remote-caller.ts), with the
// reason beside it; this table is the one place the common reading lives.
import { BackendCallError, type FailureKind } from './call-policy.ts';

/** A service's own reading of the statuses where it departs from the shared table. */
export type StatusMeanings = Readonly<Partial<Record<number, FailureKind>>>;

export function kindOfStatus(status: number, own: StatusMeanings = {}): FailureKind {
  const departure = own[status];
  if (departure !== undefined) return departure;
  if (status === 429) return 'throttled';
  // 408: the server gave up waiting for our request, an outage symptom like a 5xx.
  if (status >= 500 || status === 408) return 'unavailable';
  if (status === 401) return 'auth';
  if (status === 403) return 'permission';
  if (status === 404) return 'not-found';
  if (status === 400 || status === 409) return 'rejected';
  return 'other';
}

/** The failure a status means, tagged `HTTP_<status>` (`TOKEN_HTTP_<status>` with that prefix). */
export function statusFailure(status: number, own: StatusMeanings = {}, prefix = ''): BackendCallError {
  return new BackendCallError(kindOfStatus(status, own), `${prefix}HTTP_${status}`);
}

/** The service's own failure for a status where it departs from the table, else undefined. */
export function ownStatusFailure(
  status: number | undefined,
  own: StatusMeanings,
): BackendCallError | undefined {
  return status !== undefined && own[status] !== undefined ? statusFailure(status, own) : undefined;
}

interface StatusCarrier {
  /** Node's own responses, Azure's RestError. */
  readonly statusCode?: unknown;
  /** node-vault (request's) errors keep the response itself. */
  readonly response?: { readonly statusCode?: unknown };
  /** The AWS SDK's service exceptions. */
  readonly $metadata?: { readonly httpStatusCode?: unknown };
}

/** The HTTP status of a service's answer, where the remote services' clients put it. */
export function httpStatusOf(error: unknown): number | undefined {
  const { statusCode, response, $metadata } = (error ?? {}) as StatusCarrier;
  const status = statusCode ?? response?.statusCode ?? $metadata?.httpStatusCode;
  return typeof status === 'number' ? status : undefined;
}
