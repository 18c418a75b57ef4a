// One error catalog for the whole broker. Every error that can leave the process (as a
// gRPC status, an HTTP problem+json body or a start-up message) is a BrokerError with a
// stable code from this table, mapped explicitly to a gRPC code and an HTTP status.
// Messages are written by us; a backend's raw error text never becomes a message, it may
// only travel as a sanitised `cause` name for logs.

/** gRPC status codes (grpc/status.h); kept here so the core does not depend on grpc-js. */
export const GrpcCode = {
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  PERMISSION_DENIED: 7,
  UNAUTHENTICATED: 16,
} as const;
export type GrpcCode = (typeof GrpcCode)[keyof typeof GrpcCode];

/**
 * What an error means when it stops `serve` from starting. The CLI reads it for its exit code,
 * the broker for a backend that fails to connect at start (src/broker/joining-backend.ts).
 * - `needs-operator`: no retry and no restart mends it. A backend failing so at start stops
 *   start-up instead of joining later (a wrong PIN must never be tried twice: tokens lock or
 *   wipe), and `serve` exits 4 so that a supervisor stops restarting it.
 * - `fatal`: a backend failing so at start stops start-up too (a bug is not served around),
 *   but a restart may pass it: `serve` exits 1.
 * Absent: it may mend itself (a backend or etcd back, a socket freed). A backend failing so
 * at start joins when a probe reaches it; `serve` exits 1 and its supervisor restarts it.
 */
export type AtStart = 'needs-operator' | 'fatal';

interface CatalogEntry {
  readonly grpc: GrpcCode;
  readonly http: number;
  readonly title: string;
  readonly atStart?: AtStart;
  /**
   * Causes (errno names) that make a `needs-operator` error `fatal`: the failure may pass
   * without an operator after all (a full disk that log rotation or a cleanup frees).
   */
  readonly mayPassOn?: readonly string[];
}

export const errorCatalog = {
  NOT_FOUND: { grpc: GrpcCode.NOT_FOUND, http: 404, title: 'No such backend or key version' },
  VERSION_IN_USE: {
    grpc: GrpcCode.FAILED_PRECONDITION,
    http: 409,
    title: 'Key version is still needed',
  },
  NO_USAGE_EVIDENCE: {
    grpc: GrpcCode.FAILED_PRECONDITION,
    http: 409,
    title: 'No usage scan shows the key version is unneeded',
  },
  SCAN_OUTDATED: {
    grpc: GrpcCode.FAILED_PRECONDITION,
    http: 409,
    title: 'A newer usage scan is already recorded',
  },
  PRECONDITION_FAILED: {
    grpc: GrpcCode.FAILED_PRECONDITION,
    http: 412,
    title: 'The resource changed since it was read',
  },
  PRECONDITION_REQUIRED: {
    grpc: GrpcCode.FAILED_PRECONDITION,
    http: 428,
    title: 'The request must say which version of the resource it changes',
  },
  UNAUTHORIZED: { grpc: GrpcCode.UNAUTHENTICATED, http: 401, title: 'Missing or unknown bearer token' },
  FORBIDDEN: { grpc: GrpcCode.PERMISSION_DENIED, http: 403, title: 'The token may not do this' },
  STATE_WRITE_FAILED: {
    grpc: GrpcCode.UNAVAILABLE,
    http: 503,
    title: 'The state file could not be written',
    atStart: 'needs-operator',
    mayPassOn: ['ENOSPC', 'EDQUOT'],
  },
  INVALID_REQUEST: { grpc: GrpcCode.INVALID_ARGUMENT, http: 400, title: 'Request violates a limit' },
  // The admin listener's own refusals of a request it cannot or will not read; HTTP only.
  URI_TOO_LONG: { grpc: GrpcCode.INVALID_ARGUMENT, http: 414, title: 'A path segment is too long' },
  HEADERS_TOO_LARGE: { grpc: GrpcCode.INVALID_ARGUMENT, http: 431, title: 'Request headers are too large' },
  BODY_TOO_LARGE: { grpc: GrpcCode.INVALID_ARGUMENT, http: 413, title: 'Request body is too large' },
  REQUEST_TIMEOUT: {
    grpc: GrpcCode.DEADLINE_EXCEEDED,
    http: 408,
    title: 'The request did not arrive in time',
  },
  HOST_NOT_ALLOWED: {
    grpc: GrpcCode.PERMISSION_DENIED,
    http: 421,
    title: 'The Host header names another server',
  },
  INVALID_CIPHERTEXT: {
    grpc: GrpcCode.INVALID_ARGUMENT,
    http: 400,
    title: 'Ciphertext is malformed, foreign or tampered with',
  },
  UNKNOWN_BACKEND: {
    grpc: GrpcCode.FAILED_PRECONDITION,
    http: 409,
    title: 'Envelope names a backend that is not configured',
  },
  UNKNOWN_KEY_VERSION: {
    grpc: GrpcCode.FAILED_PRECONDITION,
    http: 409,
    title: 'Envelope names a key version the backend does not hold',
  },
  KEY_VERSION_RETIRED: { grpc: GrpcCode.FAILED_PRECONDITION, http: 409, title: 'Key version is retired' },
  BACKEND_UNAVAILABLE: { grpc: GrpcCode.UNAVAILABLE, http: 503, title: 'Key backend is unavailable' },
  BACKEND_REJECTED: {
    grpc: GrpcCode.FAILED_PRECONDITION,
    http: 409,
    title: 'Key backend rejected the request',
  },
  BACKEND_PERMISSION_DENIED: {
    grpc: GrpcCode.FAILED_PRECONDITION,
    http: 403,
    title: "Key backend denied the broker's credentials this operation",
  },
  BACKEND_AUTH_FAILED: { grpc: GrpcCode.UNAUTHENTICATED, http: 500, title: 'Key backend refused the login' },
  DEADLINE_EXCEEDED: { grpc: GrpcCode.DEADLINE_EXCEEDED, http: 504, title: 'Deadline exceeded' },
  CONFIG_INVALID: {
    grpc: GrpcCode.INVALID_ARGUMENT,
    http: 400,
    title: 'Configuration is invalid',
    atStart: 'needs-operator',
  },
  SECRET_UNREADABLE: { grpc: GrpcCode.FAILED_PRECONDITION, http: 500, title: 'A secret could not be read' },
  STATE_CORRUPT: {
    grpc: GrpcCode.INTERNAL,
    http: 500,
    title: 'State file is corrupt',
    atStart: 'needs-operator',
  },
  STATE_MISMATCH: {
    grpc: GrpcCode.FAILED_PRECONDITION,
    http: 500,
    title: 'State does not match what the backend holds',
    atStart: 'needs-operator',
  },
  HSM_LOGIN_FAILED: {
    grpc: GrpcCode.UNAUTHENTICATED,
    http: 500,
    title: 'HSM login failed',
    atStart: 'needs-operator',
  },
  HSM_TOKEN_NOT_FOUND: { grpc: GrpcCode.FAILED_PRECONDITION, http: 500, title: 'HSM token not found' },
  HSM_MECHANISM_UNSUPPORTED: {
    grpc: GrpcCode.FAILED_PRECONDITION,
    http: 500,
    title: 'The token does not offer the configured mechanism',
    atStart: 'needs-operator',
  },
  HSM_KEY_UNSAFE: {
    grpc: GrpcCode.FAILED_PRECONDITION,
    http: 500,
    title: 'A key in the token could leave it (extractable or not sensitive)',
    atStart: 'needs-operator',
  },
  KEY_MECHANISM_MISMATCH: {
    grpc: GrpcCode.FAILED_PRECONDITION,
    http: 500,
    title: 'The write key version was made for another mechanism',
    atStart: 'needs-operator',
  },
  KEY_MISSING: { grpc: GrpcCode.FAILED_PRECONDITION, http: 500, title: 'Backend holds no key version' },
  SOCKET_IN_USE: {
    grpc: GrpcCode.FAILED_PRECONDITION,
    http: 500,
    title: 'Socket is served by another process',
  },
  SOCKET_PATH_INVALID: {
    grpc: GrpcCode.FAILED_PRECONDITION,
    http: 500,
    title: 'Socket path is not usable',
    atStart: 'needs-operator',
  },
  // etcd, read by `kms-broker usage` and by the shared state store; these never travel over
  // gRPC or HTTP.
  ETCD_UNREACHABLE: { grpc: GrpcCode.UNAVAILABLE, http: 503, title: 'etcd could not be reached' },
  ETCD_AUTH_FAILED: {
    grpc: GrpcCode.UNAUTHENTICATED,
    http: 500,
    title: 'etcd refused the client certificate, or its own was not trusted',
  },
  ETCD_TLS_FILE_UNREADABLE: {
    grpc: GrpcCode.FAILED_PRECONDITION,
    http: 500,
    title: 'An etcd TLS file could not be read',
  },
  ETCD_REVISION_COMPACTED: {
    grpc: GrpcCode.FAILED_PRECONDITION,
    http: 409,
    title: "The scan's etcd revision was compacted before it finished",
  },
  ETCD_READ_FAILED: { grpc: GrpcCode.UNAVAILABLE, http: 503, title: 'etcd failed a read' },
  // `kms-broker inspect`: the value it was asked to explain cannot be read.
  ETCD_KEY_NOT_FOUND: { grpc: GrpcCode.NOT_FOUND, http: 404, title: 'etcd has no such key' },
  INPUT_UNREADABLE: {
    grpc: GrpcCode.FAILED_PRECONDITION,
    http: 400,
    title: 'The value to inspect could not be read',
  },
  // The state shared over etcd by the brokers of a control plane (`cluster`); admin API only.
  STATE_CONFLICT: {
    grpc: GrpcCode.FAILED_PRECONDITION,
    http: 409,
    title: 'Another broker changed the shared state first',
  },
  CLUSTER_UNAVAILABLE: {
    grpc: GrpcCode.UNAVAILABLE,
    http: 503,
    title: 'The shared state in etcd cannot be reached',
  },
  PROMOTION_REFUSED: {
    grpc: GrpcCode.FAILED_PRECONDITION,
    http: 409,
    title: 'A broker of the cluster cannot unwrap with the new key',
  },
  PROMOTION_TIMEOUT: {
    grpc: GrpcCode.UNAVAILABLE,
    http: 503,
    title: 'Not every broker confirmed the new key in time',
  },
  NOT_CLUSTERED: {
    grpc: GrpcCode.FAILED_PRECONDITION,
    http: 404,
    title: 'This broker does not share its state with others',
  },
  ETCD_REQUEST_FAILED: {
    grpc: GrpcCode.UNAVAILABLE,
    http: 503,
    title: 'etcd refused a request of the shared state store',
  },
  ETCD_LEASE_NOT_FOUND: {
    grpc: GrpcCode.FAILED_PRECONDITION,
    http: 409,
    title: "The broker's etcd lease expired or was revoked",
  },
  // `kms-broker migrate`: the command line's own failures; never over gRPC.
  KUBECONFIG_INVALID: {
    grpc: GrpcCode.INVALID_ARGUMENT,
    http: 400,
    title: 'The kubeconfig cannot be used',
  },
  KUBE_API_ERROR: {
    grpc: GrpcCode.UNAVAILABLE,
    http: 502,
    title: 'The Kubernetes API refused or failed a call',
  },
  RESEED_TIMEOUT: {
    grpc: GrpcCode.DEADLINE_EXCEEDED,
    http: 504,
    title: "An apiserver has not picked up the broker's key_id",
  },
  MIGRATION_FAILED: { grpc: GrpcCode.FAILED_PRECONDITION, http: 500, title: 'A storage migration failed' },
  MIGRATION_STATE_CORRUPT: {
    grpc: GrpcCode.FAILED_PRECONDITION,
    http: 500,
    title: 'The migration state file cannot be used',
  },
  // The escrow (src/escrow): offline key ceremony and recovery; the CLI's own failures.
  ESCROW_UNWRAP_FAILED: {
    grpc: GrpcCode.INVALID_ARGUMENT,
    http: 400,
    title: 'An escrow wrap did not open with this key and header',
  },
  ESCROW_WRITE_ONLY: {
    grpc: GrpcCode.FAILED_PRECONDITION,
    http: 409,
    title: 'An escrow backend only wraps; its key is made and opened offline',
  },
  ESCROW_KEY_INVALID: {
    grpc: GrpcCode.FAILED_PRECONDITION,
    http: 500,
    title: 'Escrow key file cannot be used',
  },
  ESCROW_SHARES_INVALID: {
    grpc: GrpcCode.FAILED_PRECONDITION,
    http: 500,
    title: 'Escrow shares do not rebuild the key',
  },
  ESCROW_OUTPUT_REFUSED: {
    grpc: GrpcCode.FAILED_PRECONDITION,
    http: 500,
    title: 'Escrow files cannot be written there safely',
  },
  // `kms-broker drill` and `recover` (src/recovery): the command line's own failures.
  ETCD_TOOL_MISSING: {
    grpc: GrpcCode.FAILED_PRECONDITION,
    http: 500,
    title: 'etcd or etcdutl, needed to read a snapshot, was not found',
  },
  SNAPSHOT_INVALID: {
    grpc: GrpcCode.FAILED_PRECONDITION,
    http: 500,
    title: 'The etcd snapshot cannot be read or restored',
  },
  DRILL_STATE_INVALID: {
    grpc: GrpcCode.FAILED_PRECONDITION,
    http: 500,
    title: 'The drill state file cannot be used',
  },
  RECOVERY_OUTPUT_REFUSED: {
    grpc: GrpcCode.FAILED_PRECONDITION,
    http: 500,
    title: 'Recovered objects cannot be written there safely',
  },
  INTERNAL: { grpc: GrpcCode.INTERNAL, http: 500, title: 'Internal error', atStart: 'fatal' },
} as const satisfies Record<string, CatalogEntry>;

export type ErrorCode = keyof typeof errorCatalog;

/** Brand so that `isBrokerError` holds across duplicated module copies. */
const brand = Symbol.for('kms-broker.error');

export class BrokerError extends Error {
  readonly code: ErrorCode;
  /** A safe, short name of the underlying failure (e.g. CKR_DEVICE_ERROR), for logs only. */
  readonly causeName: string | undefined;
  readonly [brand] = true;

  constructor(code: ErrorCode, message: string, causeName?: string) {
    super(message);
    this.name = 'BrokerError';
    this.code = code;
    this.causeName = causeName;
  }

  get grpcCode(): GrpcCode {
    return errorCatalog[this.code].grpc;
  }

  get httpStatus(): number {
    return errorCatalog[this.code].http;
  }
}

/**
 * What `error` means at start (see AtStart), its cause considered: a cause its catalog entry
 * names in `mayPassOn` makes a `needs-operator` error `fatal`.
 */
export function atStartOf(error: BrokerError): AtStart | undefined {
  const entry: CatalogEntry = errorCatalog[error.code];
  if (entry.atStart === 'needs-operator' && entry.mayPassOn?.includes(error.causeName ?? '') === true)
    return 'fatal';
  return entry.atStart;
}

export function isBrokerError(value: unknown): value is BrokerError {
  return typeof value === 'object' && value !== null && brand in value;
}

/**
 * Turns anything thrown into a BrokerError without leaking its text: unknown errors
 * become INTERNAL with a fixed message; the original is only named.
 */
export function toBrokerError(value: unknown): BrokerError {
  if (isBrokerError(value)) return value;
  const causeName = value instanceof Error ? value.name : typeof value;
  return new BrokerError('INTERNAL', 'internal error', causeName);
}
