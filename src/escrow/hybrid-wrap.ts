// The escrow wrap: seals a seed to the escrow's public key so that only the private key, rebuilt
// from its Shamir shares, opens it. Hybrid, so it stays secure if either ML-KEM-768 or X25519
// holds (the X-Wing / draft-ietf-tls-hybrid-design reasoning: both shared secrets enter one KDF,
// together with the ciphertext and public keys they came from):
//
//   (ss_k, ct_k)  = ML-KEM-768.Encaps(pk_k)                         FIPS 203; ct_k is 1088 bytes
//   (sk_e, pk_e)  = a fresh X25519 key pair; ss_x = X25519(sk_e, pk_x)    RFC 7748
//   key           = HKDF-SHA256(ikm = ss_k ‖ ss_x, salt = empty,          RFC 5869
//                     info = "kms-broker/escrow/v1" ‖ SHA-256(ct_k) ‖ pk_e ‖ pk_x ‖ SHA-256(SPKI of pk_k),
//                     L = 32)
//   nonce         = 12 random bytes
//   ct ‖ tag      = AES-256-GCM(key, nonce, plaintext, aad)               NIST SP 800-38D; 16-byte tag
//   wrap          = 0x01 ‖ ct_k ‖ pk_e ‖ nonce ‖ ct ‖ tag
//
// ct_k enters the info as its SHA-256: OpenSSL caps HKDF's info at 1024 bytes, and binding its
// hash binds it as well (collision resistance). A fresh key per wrap makes the random nonce safe. Opening fails with one error whatever the
// cause (shape, KEM, tag), so a caller learns nothing about which check failed.
import {
  createCipheriv,
  createHash,
  createDecipheriv,
  createPublicKey,
  decapsulate,
  diffieHellman,
  encapsulate,
  generateKeyPairSync,
  hkdfSync,
  randomBytes,
  type KeyObject,
} from 'node:crypto';
import { BrokerError } from '../errors.ts';
import {
  mlKemPublicKeyHash,
  publicKeyOf,
  x25519PublicBytes,
  type EscrowPrivateKey,
  type EscrowPublicKey,
} from './key-files.ts';

const VERSION = 0x01;
const ML_KEM_CIPHERTEXT_BYTES = 1088;
const X25519_PUBLIC_BYTES = 32;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const INFO_LABEL = Buffer.from('kms-broker/escrow/v1', 'ascii');

/** The mechanism an escrow wrap's envelope header records. */
export const ESCROW_MECHANISM = 'mlkem768-x25519-aes256gcm';

/** Bytes a wrap adds to its plaintext: 1 + 1088 + 32 + 12 + 16 = 1149. */
export const ESCROW_WRAP_OVERHEAD =
  1 + ML_KEM_CIPHERTEXT_BYTES + X25519_PUBLIC_BYTES + NONCE_BYTES + TAG_BYTES;

export function sealToEscrow(publicKey: EscrowPublicKey, plaintext: Buffer, aad: Buffer): Buffer {
  const { sharedKey: ssK, ciphertext: ctK } = encapsulate(publicKey.mlKem);
  const ephemeral = generateKeyPairSync('x25519');
  const ssX = diffieHellman({ privateKey: ephemeral.privateKey, publicKey: publicKey.x25519 });
  const pkE = x25519PublicBytes(ephemeral.publicKey);
  const key = deriveKey(ssK, ssX, ctK, pkE, publicKey);
  const nonce = randomBytes(NONCE_BYTES);
  const cipher = createCipheriv('aes-256-gcm', key, nonce, { authTagLength: TAG_BYTES }).setAAD(aad);
  const sealed = Buffer.concat([cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]);
  key.fill(0);
  return Buffer.concat([Buffer.of(VERSION), ctK, pkE, nonce, sealed]);
}

export function openFromEscrow(privateKey: EscrowPrivateKey, wrapped: Buffer, aad: Buffer): Buffer {
  if (wrapped.length < ESCROW_WRAP_OVERHEAD || wrapped[0] !== VERSION) throw unwrapFailed();
  let offset = 1;
  const take = (length: number) => wrapped.subarray(offset, (offset += length));
  const ctK = take(ML_KEM_CIPHERTEXT_BYTES);
  const pkE = take(X25519_PUBLIC_BYTES);
  const nonce = take(NONCE_BYTES);
  const body = wrapped.subarray(offset, wrapped.length - TAG_BYTES);
  const tag = wrapped.subarray(wrapped.length - TAG_BYTES);
  let key: Buffer | undefined;
  try {
    // ML-KEM decapsulation never fails on a tampered ciphertext (implicit rejection gives a
    // pseudo-random secret); the GCM tag is what catches it, like every other change.
    const ssK = decapsulate(privateKey.mlKem, ctK);
    const ssX = diffieHellman({ privateKey: privateKey.x25519, publicKey: x25519PublicKey(pkE) });
    key = deriveKey(ssK, ssX, ctK, pkE, publicKeyOf(privateKey));
    const decipher = createDecipheriv('aes-256-gcm', key, nonce, { authTagLength: TAG_BYTES })
      .setAAD(aad)
      .setAuthTag(tag);
    return Buffer.concat([decipher.update(body), decipher.final()]);
  } catch {
    throw unwrapFailed();
  } finally {
    key?.fill(0);
  }
}

function deriveKey(ssK: Buffer, ssX: Buffer, ctK: Buffer, pkE: Buffer, publicKey: EscrowPublicKey): Buffer {
  const ikm = Buffer.concat([ssK, ssX]);
  const info = Buffer.concat([
    INFO_LABEL,
    createHash('sha256').update(ctK).digest(),
    pkE,
    recipientBinding(publicKey),
  ]);
  const key = Buffer.from(hkdfSync('sha256', ikm, Buffer.alloc(0), info, 32));
  ikm.fill(0);
  ssK.fill(0);
  ssX.fill(0);
  return key;
}

/**
 * pk_x ‖ SHA-256(SPKI of pk_k): the same for every wrap to one key, and a third of a wrap's
 * cost if exported and hashed each time; kept per key object.
 */
const recipientBindings = new WeakMap<EscrowPublicKey, Buffer>();

function recipientBinding(publicKey: EscrowPublicKey): Buffer {
  let binding = recipientBindings.get(publicKey);
  if (binding === undefined) {
    binding = Buffer.concat([x25519PublicBytes(publicKey.x25519), mlKemPublicKeyHash(publicKey)]);
    recipientBindings.set(publicKey, binding);
  }
  return binding;
}

const X25519_SPKI_PREFIX = Buffer.from('302a300506032b656e032100', 'hex');

/** An X25519 public key from its 32 raw bytes (RFC 8410 SPKI around them). */
function x25519PublicKey(raw: Buffer): KeyObject {
  return createPublicKey({ key: Buffer.concat([X25519_SPKI_PREFIX, raw]), format: 'der', type: 'spki' });
}

function unwrapFailed(): BrokerError {
  return new BrokerError(
    'ESCROW_UNWRAP_FAILED',
    'the escrow wrap does not open: it is damaged, belongs to another escrow key, or was made for another envelope header',
  );
}
