// How every remote key service is called: a bound on concurrent requests, at most a few
// attempts of transient failures (outages, throttling) with jittered exponential backoff,
// all inside the call's own deadline, and each failure turned into the broker's error
// catalog by its kind, never by the service's message text.
import {
  BulkheadRejectedError,
  ExponentialBackoff,
  TaskCancelledError,
  bulkhead,
  handleWhen,
  retry,
  wrap,
} from 'cockatiel';
import { partOfDeadline, remainingMs, type Deadline } from '../deadline.ts';
import { BrokerError } from '../errors.ts';

export type FailureKind =
  /** Connection refused or reset, timeouts, 5xx: worth a retry. */
  | 'unavailable'
  /** The service asks us to slow down (429, ThrottlingException, RESOURCE_EXHAUSTED): retry with backoff. */
  | 'throttled'
  /** The credentials are valid but may not do this. */
  | 'permission'
  /** The credentials themselves were refused (expired, unknown, malformed). */
  | 'auth'
  | 'not-found'
  /** The service could not open the wrapped key: tampered, foreign or from another key. */
  | 'invalid-ciphertext'
  /** The service rejected the request's input or the key's state. */
  | 'rejected'
  | 'other';

/** A failed service request. `cause` is a safe tag (HTTP_503, ThrottlingException), never the service's text. */
export class BackendCallError extends Error {
  readonly kind: FailureKind;
  override readonly cause: string;

  constructor(kind: FailureKind, cause: string) {
    super(`backend request failed: ${cause}`);
    this.name = 'BackendCallError';
    this.kind = kind;
    this.cause = cause;
  }
}

export interface CallPolicyOptions {
  readonly maxConcurrency: number;
  /** Budget of one attempt; a call's own deadline may cut it shorter. */
  readonly requestTimeoutMs: number;
  /** Turns whatever the service's client threw into a classified failure. */
  readonly classify: (error: unknown) => BackendCallError;
  /** Attempts in all, the first included (default 3). */
  readonly maxAttempts?: number;
}

export interface CallPolicy {
  /**
   * Runs `attempt` under the bound and the retry rules. Each attempt gets a signal that fires
   * at the earlier of the call's deadline and the request timeout, and that timeout in ms.
   */
  run<T>(
    deadline: Deadline,
    attempt: (attemptSignal: AbortSignal, timeoutMs: number) => Promise<T>,
  ): Promise<T>;
}

const MAX_QUEUED_REQUESTS = 4096;
const retryableKinds: ReadonlySet<FailureKind> = new Set(['unavailable', 'throttled']);

export function createCallPolicy(options: CallPolicyOptions): CallPolicy {
  const limiter = bulkhead(options.maxConcurrency, MAX_QUEUED_REQUESTS);
  // cockatiel's ExponentialBackoff uses decorrelated jitter, so throttled callers spread out.
  const retries = retry(
    handleWhen(error => error instanceof BackendCallError && retryableKinds.has(error.kind)),
    {
      maxAttempts: (options.maxAttempts ?? 3) - 1,
      backoff: new ExponentialBackoff({ initialDelay: 25, maxDelay: 400 }),
    },
  );
  const policy = wrap(retries, limiter);

  return {
    async run<T>(deadline: Deadline, attempt: (attemptSignal: AbortSignal, timeoutMs: number) => Promise<T>) {
      const { signal } = deadline;
      try {
        return await policy.execute(async () => {
          // Whole milliseconds: timers refuse fractions.
          const timeoutMs = Math.max(
            1,
            Math.floor(Math.min(options.requestTimeoutMs, remainingMs(deadline))),
          );
          // The attempt's part of the call's deadline, its timer cleared as soon as it settles.
          const part = partOfDeadline(deadline, timeoutMs);
          try {
            return await attempt(part.signal, timeoutMs);
          } catch (error) {
            if (error instanceof BrokerError) throw error;
            // An attempt cut short by its own timeout is an outage symptom, worth a retry.
            if (part.signal.aborted && !signal.aborted) throw new BackendCallError('unavailable', 'TIMEOUT');
            throw options.classify(error);
          } finally {
            part.dispose();
          }
        }, signal);
      } catch (error) {
        if (error instanceof TaskCancelledError || signal.aborted) {
          throw new BrokerError(
            'DEADLINE_EXCEEDED',
            'the backend request did not complete within its deadline',
          );
        }
        if (error instanceof BulkheadRejectedError) throw new BackendCallError('unavailable', 'QUEUE_FULL');
        throw error;
      }
    },
  };
}

export interface FailureContext {
  /** The backend's configured name. */
  readonly backend: string;
  /** The service, as operators call it ("AWS KMS"). */
  readonly service: string;
  /** What was attempted, e.g. "kms:Decrypt on arn:aws:kms:...": named in permission errors. */
  readonly permission: string;
}

/**
 * The broker error for a classified failure. Not-found is left to the backend, which knows
 * whether a key, a version or a whole key ring is missing.
 */
export function brokerErrorFor(error: unknown, context: FailureContext): BrokerError {
  if (error instanceof BrokerError) return error;
  const failure = error instanceof BackendCallError ? error : new BackendCallError('other', 'CLIENT_ERROR');
  const { backend, service, permission } = context;
  switch (failure.kind) {
    case 'unavailable':
    case 'throttled':
      return new BrokerError(
        'BACKEND_UNAVAILABLE',
        `backend ${backend}: ${service} is unavailable (${failure.cause})`,
        failure.cause,
      );
    case 'permission':
      return new BrokerError(
        'BACKEND_PERMISSION_DENIED',
        `backend ${backend}: ${service} denied the broker's credentials ${permission}`,
        failure.cause,
      );
    case 'auth':
      return new BrokerError(
        'BACKEND_AUTH_FAILED',
        `backend ${backend}: ${service} refused the broker's credentials (${failure.cause})`,
        failure.cause,
      );
    case 'invalid-ciphertext':
      return new BrokerError(
        'INVALID_CIPHERTEXT',
        `backend ${backend}: ${service} could not decrypt the wrapped key (tampered, or from another key)`,
        failure.cause,
      );
    case 'not-found':
      return new BrokerError(
        'KEY_MISSING',
        `backend ${backend}: ${service} does not have the key`,
        failure.cause,
      );
    case 'rejected':
      return new BrokerError(
        'BACKEND_REJECTED',
        `backend ${backend}: ${service} rejected the request (${failure.cause})`,
        failure.cause,
      );
    case 'other':
      return new BrokerError(
        'BACKEND_UNAVAILABLE',
        `backend ${backend}: the request to ${service} failed (${failure.cause})`,
        failure.cause,
      );
  }
}

/** Socket-level error codes that mean "the service is not reachable right now". */
export const transientSocketErrors: ReadonlySet<string> = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EAI_AGAIN',
  'ERR_SOCKET_CONNECTION_TIMEOUT',
]);
