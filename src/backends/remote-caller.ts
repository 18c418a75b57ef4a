// How a backend calls its remote key service: every request under the shared call policy
// (a bound on concurrent requests, retries of outages and throttling inside the call's
// deadline), and every failure read in one order: first what it means for that service (the
// backend's one hook: SDK error names, service codes, Vault's sealed answer), then the shared
// HTTP-status table, then the socket error code; and turned into the broker's error catalog.
import type { Deadline } from '../deadline.ts';
import type { BrokerError } from '../errors.ts';
import {
  BackendCallError,
  brokerErrorFor,
  createCallPolicy,
  transientSocketErrors,
  type CallPolicyOptions,
} from './call-policy.ts';
import { httpStatusOf, statusFailure } from './http-status.ts';

/** What failures mean for one service. */
export interface ServiceFailures {
  /** The service's own meaning of a failure, or undefined to let the shared rules decide. */
  readonly classify: (error: unknown) => BackendCallError | undefined;
  /** The cause named when nothing tells what failed, e.g. AWS_CLIENT_ERROR. */
  readonly unexplained: string;
  /**
   * Whether a client-side error code (ENOTFOUND, ERR_OSSL_...) is named as the cause instead;
   * the AWS and Alibaba backends have always named only their `unexplained` tag.
   */
  readonly namesErrorCodes: boolean;
}

export interface RemoteCallerOptions extends Pick<CallPolicyOptions, 'maxConcurrency' | 'requestTimeoutMs'> {
  /** The backend's configured name. */
  readonly backend: string;
  /** The service, as operators call it ("AWS KMS"). */
  readonly service: string;
  readonly failures: ServiceFailures;
}

/** What a request needs, for the error that names it when the service refuses. */
export interface Need {
  /** What was attempted, e.g. "kms:Decrypt on arn:aws:kms:...": named in permission errors. */
  readonly permission: string;
  /** A better broker error than the catalog's for this request's failure, when there is one. */
  readonly refine?: (failure: BackendCallError) => BrokerError | undefined;
}

/** One attempt: its signal fires at its timeout or with the call's deadline. */
export type Attempt<T> = (attemptSignal: AbortSignal, timeoutMs: number) => Promise<T>;

export interface RemoteCaller {
  /** Runs a request; a failure leaves classified (BackendCallError) or as DEADLINE_EXCEEDED. */
  run<T>(deadline: Deadline, attempt: Attempt<T>): Promise<T>;
  /** Runs a request; a failure leaves as the broker error `brokerError` makes of it. */
  call<T>(deadline: Deadline, need: Need, attempt: Attempt<T>): Promise<T>;
  /** The broker error for a failed request: the need's refinement, else the catalog's. */
  brokerError(error: unknown, need: Need): BrokerError;
}

export function createRemoteCaller(options: RemoteCallerOptions): RemoteCaller {
  const { backend, service, failures } = options;
  const policy = createCallPolicy({
    maxConcurrency: options.maxConcurrency,
    requestTimeoutMs: options.requestTimeoutMs,
    classify: error => classifyFailure(error, failures),
  });
  const brokerError = (error: unknown, need: Need): BrokerError => {
    const refined = error instanceof BackendCallError ? need.refine?.(error) : undefined;
    return refined ?? brokerErrorFor(error, { backend, service, permission: need.permission });
  };
  return {
    run: (deadline, attempt) => policy.run(deadline, attempt),
    async call(deadline, need, attempt) {
      try {
        return await policy.run(deadline, attempt);
      } catch (error) {
        throw brokerError(error, need);
      }
    },
    brokerError,
  };
}

/** A client-side error code worth naming: Node's (ENOENT, ERR_OSSL_*) and the like. */
const ERROR_CODE = /^[A-Z][A-Z0-9_]{1,40}$/;

/** What a failure means: the service's hook, the shared HTTP-status table, the socket code. */
export function classifyFailure(error: unknown, failures: ServiceFailures): BackendCallError {
  if (error instanceof BackendCallError) return error;
  const own = failures.classify(error);
  if (own !== undefined) return own;
  const status = httpStatusOf(error);
  if (status !== undefined) return statusFailure(status);
  const code = (error as { code?: unknown } | null | undefined)?.code;
  if (typeof code === 'string' && transientSocketErrors.has(code))
    return new BackendCallError('unavailable', code);
  if (failures.namesErrorCodes && typeof code === 'string' && ERROR_CODE.test(code))
    return new BackendCallError('other', code);
  return new BackendCallError('other', failures.unexplained);
}
