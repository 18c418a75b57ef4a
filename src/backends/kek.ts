// The KEK interface: the seam between the broker and every key service. A backend is a
// thin adapter; it knows its service, the broker knows only this. Every call carries its
// deadline as a value (signal and time), so a backend sizes its retries to what is left.
import type { Deadline } from '../deadline.ts';

export interface KeyVersionInfo {
  /** Backend-specific version name, as recorded in envelopes ("1", "2", ...). */
  readonly version: string;
  /**
   * A stable, non-secret identity of this exact key (e.g. token serial + CKA_ID), so that
   * key_id changes if a key is ever recreated under the same version name.
   */
  readonly fingerprint: string;
  readonly createdAt?: string | undefined;
  /**
   * Why this version cannot make new wraps with the backend's configured mechanism (a key
   * made for another mechanism); absent when it can. It still unwraps what it wrapped.
   */
  readonly writeRefusal?: string | undefined;
}

export interface WrapRequest {
  readonly plaintext: Buffer;
  readonly keyVersion: string;
  /** Bytes bound to the wrap (AES-GCM AAD): the envelope header. */
  readonly aad: Buffer;
  readonly deadline: Deadline;
}

export interface UnwrapRequest {
  readonly wrapped: Buffer;
  readonly keyVersion: string;
  readonly mechanism: string;
  readonly aad: Buffer;
  readonly deadline: Deadline;
}

/** A service that rotates its own keys (Transit, cloud KMSes): how the broker learns of it. */
export interface ExternalRotation {
  readonly intervalMs: number;
  /** A new current version must be seen unchanged this long before the broker adopts it. */
  readonly stableForMs: number;
  /** The version the service itself now considers current. */
  latest(deadline: Deadline): Promise<KeyVersionInfo>;
}

export interface KekBackend {
  readonly name: string;
  readonly type: string;
  /** The mechanism new wraps use; recorded (and authenticated) in each envelope header. */
  readonly mechanism: string;
  /** Whether start-up may create version 1 when the service holds no key. */
  readonly autoCreate: boolean;
  /** The config key that enables autoCreate, named in the error when no key exists. */
  readonly autoCreateOption: string;
  /**
   * A key that only wraps (escrow): its wrap goes beside every seed, never counts towards a
   * successful Encrypt, never writes the ciphertext itself, and is never asked to unwrap.
   */
  readonly writeOnly?: boolean;
  /** Present when the service can rotate keys on its own. */
  readonly externalRotation?: ExternalRotation | undefined;
  /**
   * Connect and authenticate. Fails fast on configuration errors (wrong PIN, no token). After
   * a failure it may be called again (the service came back); `close` is final.
   */
  open(): Promise<void>;
  listVersions(deadline: Deadline): Promise<KeyVersionInfo[]>;
  /** Creates a new key version in the service. */
  createVersion(deadline: Deadline): Promise<KeyVersionInfo>;
  wrap(request: WrapRequest): Promise<Buffer>;
  unwrap(request: UnwrapRequest): Promise<Buffer>;
  /** Cheap liveness check of the service: never a wrap. */
  probe(deadline: Deadline): Promise<void>;
  close(): Promise<void>;
}
