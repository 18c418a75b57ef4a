// key_id names the current write key set. It is opaque (a hash behind a format prefix,
// nothing secret), deterministic from backend identities and key versions so every
// broker of a control plane that sees the same keys agrees, and it changes with every
// rotation. Because key fingerprints include the key's unique object identity, a key
// recreated under an old version name yields a new key_id, so a key_id is never reused
// for a different key set.
import { createHash } from 'node:crypto';

export const KEY_ID_PREFIX = 'kbr1-';

export interface WriteKey {
  readonly backend: string;
  readonly version: string;
  readonly fingerprint: string;
}

export function deriveKeyId(writeKeys: readonly WriteKey[], generation: number): string {
  const canonical = JSON.stringify({
    format: 1,
    generation,
    keys: writeKeys.map(key => [key.backend, key.version, key.fingerprint]),
  });
  return KEY_ID_PREFIX + createHash('sha256').update(canonical).digest('base64url');
}

/** Whether a key_id has the shape this broker issues (Decrypt must not touch foreign data). */
const ownKeyIdPattern = new RegExp(`^${KEY_ID_PREFIX}[A-Za-z0-9_-]{43}$`);

export function isOwnKeyId(keyId: string): boolean {
  return ownKeyIdPattern.test(keyId);
}
