// The apiserver's limits (kms-contract §2), enforced both ways: on what we accept, so a
// hostile or broken caller gets INVALID_ARGUMENT before any backend work, and on what we
// return, so the apiserver never has to reject a response of ours.
import { BrokerError } from '../errors.ts';
import { MAX_ANNOTATIONS_BYTES, MAX_CIPHERTEXT_BYTES, MAX_KEY_ID_BYTES } from '../kms-limits.ts';

/** KMS v2 seeds and v1 DEKs are 32 bytes; room for other key sizes, none for bulk data. */
export const MAX_PLAINTEXT_BYTES = 128;
export const MAX_ANNOTATION_COUNT = 32;
export const MAX_UID_LENGTH = 256;
/** Largest request message the server decodes at all (annotations dominate). */
export const MAX_REQUEST_MESSAGE_BYTES = 64 * 1024;

const fqdnLabel = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

/** apimachinery IsFullyQualifiedDomainName: lowercase RFC 1123, at least two labels. */
export function isFullyQualifiedDomainName(name: string): boolean {
  const trimmed = name.endsWith('.') ? name.slice(0, -1) : name;
  if (trimmed.length === 0 || trimmed.length > 253) return false;
  const labels = trimmed.split('.');
  return labels.length >= 2 && labels.every(label => label.length <= 63 && fqdnLabel.test(label));
}

export function checkPlaintext(plaintext: Buffer): void {
  if (plaintext.length === 0) throw invalid('plaintext is empty');
  if (plaintext.length > MAX_PLAINTEXT_BYTES)
    throw invalid(`plaintext is ${plaintext.length} bytes; at most ${MAX_PLAINTEXT_BYTES} are accepted`);
}

export function checkUid(uid: string): void {
  if (uid.length > MAX_UID_LENGTH) throw invalid(`uid exceeds ${MAX_UID_LENGTH} characters`);
}

export function checkCiphertext(ciphertext: Buffer): void {
  if (ciphertext.length === 0) throw invalid('ciphertext is empty');
  if (ciphertext.length > MAX_CIPHERTEXT_BYTES)
    throw invalid(`ciphertext is ${ciphertext.length} bytes; at most ${MAX_CIPHERTEXT_BYTES} are accepted`);
}

export function checkKeyId(keyId: string): void {
  if (keyId.length === 0) throw invalid('key_id is empty');
  if (Buffer.byteLength(keyId) > MAX_KEY_ID_BYTES) throw invalid(`key_id exceeds ${MAX_KEY_ID_BYTES} bytes`);
}

export function checkAnnotations(annotations: Readonly<Record<string, Buffer>>): void {
  const keys = Object.keys(annotations);
  if (keys.length > MAX_ANNOTATION_COUNT) throw invalid(`more than ${MAX_ANNOTATION_COUNT} annotations`);
  let total = 0;
  for (const key of keys) {
    if (!isFullyQualifiedDomainName(key))
      throw invalid('an annotation key is not a lowercase fully qualified domain name');
    total += Buffer.byteLength(key) + (annotations[key]?.length ?? 0);
  }
  if (total > MAX_ANNOTATIONS_BYTES)
    throw invalid(`annotations total ${total} bytes; at most ${MAX_ANNOTATIONS_BYTES} are accepted`);
}

/** Our own response must pass the apiserver's checks; if not, that is our bug, not the caller's. */
export function checkEncryptResponse(response: {
  ciphertext: Buffer;
  keyId: string;
  annotations: Readonly<Record<string, Buffer>>;
}): void {
  try {
    checkCiphertext(response.ciphertext);
    checkKeyId(response.keyId);
    checkAnnotations(response.annotations);
  } catch (error) {
    throw new BrokerError(
      'INTERNAL',
      `refusing to return a response the apiserver would reject: ${(error as Error).message}`,
    );
  }
}

function invalid(message: string): BrokerError {
  return new BrokerError('INVALID_REQUEST', message);
}
