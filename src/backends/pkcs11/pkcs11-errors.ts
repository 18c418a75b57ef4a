// Classifies PKCS#11 return values into what the backend should do about them. Only the
// CKR_ name leaves this module (as a log-safe cause); never the library's message.
//
// Everything but 'data' and 'pin' is an availability failure: the call answers UNAVAILABLE
// and feeds the backend's breaker. Only 'session', 'login' and 'device' start a recovery.

export type Pkcs11Failure =
  /** The session handle is gone: replace the session. */
  | 'session'
  /** Logged out or object handles invalid (SoftHSM reports a logout this way): re-login, re-find keys. */
  | 'login'
  /** Device, token or library state lost: re-open, and reset the library if that does not help. */
  | 'device'
  /** The ciphertext did not authenticate or decrypt: the caller's data is bad. */
  | 'data'
  /** PIN problems: never retried, a token may lock or wipe itself. */
  | 'pin'
  | 'other';

export type RecoverableFailure = 'session' | 'login' | 'device';

const failureByName: Record<string, Pkcs11Failure> = {
  CKR_SESSION_HANDLE_INVALID: 'session',
  CKR_SESSION_CLOSED: 'session',
  CKR_SESSION_COUNT: 'session',
  CKR_USER_NOT_LOGGED_IN: 'login',
  CKR_OBJECT_HANDLE_INVALID: 'login',
  CKR_KEY_HANDLE_INVALID: 'login',
  CKR_DEVICE_REMOVED: 'device',
  CKR_DEVICE_ERROR: 'device',
  CKR_DEVICE_MEMORY: 'device',
  CKR_TOKEN_NOT_PRESENT: 'device',
  CKR_TOKEN_NOT_RECOGNIZED: 'device',
  CKR_CRYPTOKI_NOT_INITIALIZED: 'device',
  CKR_SLOT_ID_INVALID: 'device',
  // The spec's "unrecoverable" error, and what SoftHSM answers for every call on a token
  // whose storage went away, until the library is initialized again. SoftHSM also reports a
  // GCM tag mismatch this way; the connection tells the two apart by checking the token
  // (hsm-connection.ts), never by this name alone.
  CKR_GENERAL_ERROR: 'device',
  CKR_ENCRYPTED_DATA_INVALID: 'data',
  CKR_ENCRYPTED_DATA_LEN_RANGE: 'data',
  // An AES-KWP unwrap whose RFC 5649 integrity check failed.
  CKR_WRAPPED_KEY_INVALID: 'data',
  CKR_WRAPPED_KEY_LEN_RANGE: 'data',
  CKR_PIN_INCORRECT: 'pin',
  CKR_PIN_LOCKED: 'pin',
  CKR_PIN_EXPIRED: 'pin',
  CKR_PIN_INVALID: 'pin',
  CKR_PIN_LEN_RANGE: 'pin',
};

/** The CKR_ name of a PKCS#11 error, or undefined for anything else. */
export function ckrName(error: unknown): string | undefined {
  if (!(error instanceof Error)) return undefined;
  return /\b(CKR_[A-Z0-9_]+)\b/.exec(error.message)?.[1];
}

export function classify(error: unknown): Pkcs11Failure {
  return classifyName(ckrName(error));
}

/** The class of a CKR_ name, as carried by a BrokerError's causeName. */
export function classifyName(name: string | undefined): Pkcs11Failure {
  return (name === undefined ? undefined : failureByName[name]) ?? 'other';
}

export function isRecoverable(failure: Pkcs11Failure | undefined): failure is RecoverableFailure {
  return failure === 'session' || failure === 'login' || failure === 'device';
}
