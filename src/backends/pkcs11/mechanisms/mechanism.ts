// The seam between the PKCS#11 backend and its wrap mechanisms. A mechanism is chosen by
// the config for new wraps and by the name each envelope records for reading, so a backend
// whose config switches mechanism still reads everything written before.
import type graphene from 'graphene-pk11';
import { performCipher, type CipherOp, type CipherResult } from '../threads/cipher-call.ts';

export type KeyKind = 'aes' | 'rsa';

/** What a key object's attributes allow (CKA_ENCRYPT, CKA_DECRYPT, CKA_WRAP, CKA_UNWRAP). */
export interface KeyUsage {
  readonly encrypt: boolean;
  readonly decrypt: boolean;
  readonly wrap: boolean;
  readonly unwrap: boolean;
}

/** One key version as found in the token. */
export interface VersionKey {
  readonly kind: KeyKind;
  /** The object that unwraps: the AES secret key, or the RSA private key. */
  readonly key: graphene.Key;
  /** The object that wraps: the same AES key, or the RSA public key (absent if not found). */
  readonly sealKey: graphene.Key | undefined;
  /** For sealing, the sealing object's usage; for opening, the unwrapping object's. */
  readonly sealUsage: KeyUsage;
  readonly openUsage: KeyUsage;
  /** RSA: the modulus length in bytes, which a wrap's is; read once with the key, not per wrap. */
  readonly modulusBytes?: number;
}

/**
 * A leased session and the way its cipher calls run: on the module's crypto threads in the
 * backend, in the calling thread for hsm-probe. Other calls (C_WrapKey, objects) use the session.
 */
export interface SessionLane {
  readonly session: graphene.Session;
  cipher(op: CipherOp): Promise<CipherResult>;
}

/** A lane whose cipher calls run in this thread, synchronously. */
export function inThreadLane(session: graphene.Session): SessionLane {
  return {
    session,
    cipher: op =>
      new Promise(resolve => resolve(performCipher(session.lib, { ...op, session: session.handle }))),
  };
}

export interface Pkcs11Mechanism {
  /** The name recorded (and authenticated) in each envelope header. */
  readonly name: string;
  readonly keyKind: KeyKind;
  /** The attribute a key needs to seal with this mechanism, and the one it needs to open. */
  readonly sealsWith: keyof KeyUsage;
  readonly opensWith: keyof KeyUsage;
  /** The CK_MECHANISM_TYPE the token must offer, with the CKF_ flags this mechanism uses. */
  readonly requires: { readonly type: number; readonly flags: number };
  /** A wrap shorter than this cannot be one of this mechanism's. */
  readonly minWrappedBytes: number;
  seal(lane: SessionLane, key: VersionKey, seed: Buffer, header: Buffer): Promise<Buffer>;
  /** The seed; a wrap that fails authentication throws (INVALID_CIPHERTEXT or the token's error). */
  open(lane: SessionLane, key: VersionKey, wrapped: Buffer, header: Buffer): Promise<Buffer>;
}

/** Whether `key` can seal (`direction` 'seal') or open with `mechanism`. */
export function keyFits(key: VersionKey, mechanism: Pkcs11Mechanism, direction: 'seal' | 'open'): boolean {
  if (key.kind !== mechanism.keyKind) return false;
  return direction === 'seal'
    ? key.sealKey !== undefined && key.sealUsage[mechanism.sealsWith]
    : key.openUsage[mechanism.opensWith];
}

/** A graphene callback that settles a promise; a missing result counts as the token's failure. */
export function settle<T>(
  resolve: (value: T) => void,
  reject: (error: unknown) => void,
): (error: Error | null, value: T | null) => void {
  return (error, value) => {
    if (error) reject(error);
    else if (value === null) reject(new Error('CKR_GENERAL_ERROR: the module returned no result'));
    else resolve(value);
  };
}

/** Destroys a session object; one its session already took with it (a broken session) is no error. */
export function destroyQuietly(object: graphene.SessionObject | undefined): void {
  try {
    object?.destroy();
  } catch {
    // A session that broke meanwhile takes its session objects with it.
  }
}
