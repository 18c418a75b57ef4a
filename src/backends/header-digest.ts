// Header binding for wrap mechanisms that take no associated data (RSA-OAEP without a label,
// AES key wrap): the seed is wrapped followed by the SHA-256 digest of the envelope header,
// and after unwrapping the digest is compared with the header the wrap arrived with. A wrap
// moved under another header, or tampered with, then fails like a failed GCM tag.
import { createHash, timingSafeEqual } from 'node:crypto';

export const HEADER_DIGEST_BYTES = 32;

function digest(header: Buffer): Buffer {
  return createHash('sha256').update(header).digest();
}

/** The plaintext to wrap: `seed || SHA-256(header)`. */
export function bindHeader(seed: Buffer, header: Buffer): Buffer {
  return Buffer.concat([seed, digest(header)]);
}

/** The seed of an unwrapped `seed || SHA-256(header)`, or undefined when the digest does not match. */
export function unbindHeader(payload: Buffer, header: Buffer): Buffer | undefined {
  if (payload.length <= HEADER_DIGEST_BYTES) return undefined;
  const seed = payload.subarray(0, payload.length - HEADER_DIGEST_BYTES);
  const bound = payload.subarray(payload.length - HEADER_DIGEST_BYTES);
  return timingSafeEqual(bound, digest(header)) ? Buffer.from(seed) : undefined;
}
