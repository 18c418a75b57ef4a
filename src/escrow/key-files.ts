// The escrow key pair and its two encodings. The public key is a PEM file (what a config will
// name): one ML-KEM-768 and one X25519 SubjectPublicKeyInfo block, in any order. The private key
// exists only as bytes handed to Shamir sharing, never as a file: a version byte, the 64-byte
// ML-KEM seed (FIPS 203 d ‖ z) and the 32-byte X25519 scalar. Seeds rather than whole PKCS#8
// keys (2498 + 48 bytes) keep each share short enough for an operator to type from paper.
import {
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
} from 'node:crypto';
import { BrokerError } from '../errors.ts';

export interface EscrowPublicKey {
  readonly mlKem: KeyObject;
  readonly x25519: KeyObject;
}

export interface EscrowPrivateKey {
  readonly mlKem: KeyObject;
  readonly x25519: KeyObject;
}

const PRIVATE_KEY_VERSION = 0x01;
const ML_KEM_SEED_BYTES = 64;
const X25519_PRIVATE_BYTES = 32;
/** The length of the private key bytes that are shared. */
export const PRIVATE_KEY_BYTES = 1 + ML_KEM_SEED_BYTES + X25519_PRIVATE_BYTES;

// The fixed DER around each private value. Node (OpenSSL 3.5) exports an ML-KEM-768 key as
// the "both" form (seed and expanded key) and accepts the seed-only form back (the layouts of
// draft-ietf-lamps-kyber-certificates, the same bytes for every key); X25519 is RFC 8410's.
const ML_KEM_BOTH_PREFIX = Buffer.from('308209be020100300b0609608648016503040402048209aa308209a60440', 'hex');
const ML_KEM_SEED_ONLY_PREFIX = Buffer.from('3054020100300b060960864801650304040204428040', 'hex');
const X25519_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex');

export function generateEscrowKeyPair(): { publicKey: EscrowPublicKey; privateKey: EscrowPrivateKey } {
  // The cast: @types/node 24 does not list 'ml-kem-768' among the overloads yet.
  const mlKem = generateKeyPairSync('ml-kem-768' as 'x25519');
  const x25519 = generateKeyPairSync('x25519');
  return {
    publicKey: { mlKem: mlKem.publicKey, x25519: x25519.publicKey },
    privateKey: { mlKem: mlKem.privateKey, x25519: x25519.privateKey },
  };
}

export function publicKeyOf(privateKey: EscrowPrivateKey): EscrowPublicKey {
  return { mlKem: createPublicKey(privateKey.mlKem), x25519: createPublicKey(privateKey.x25519) };
}

export function samePublicKey(a: EscrowPublicKey, b: EscrowPublicKey): boolean {
  return a.mlKem.equals(b.mlKem) && a.x25519.equals(b.x25519);
}

function spki(key: KeyObject): Buffer {
  return key.export({ format: 'der', type: 'spki' });
}

/** SHA-256 of the ML-KEM public key's SPKI, bound into every wrap's key derivation. */
export function mlKemPublicKeyHash(publicKey: EscrowPublicKey): Buffer {
  return createHash('sha256').update(spki(publicKey.mlKem)).digest();
}

/** The raw 32-byte X25519 public value (RFC 7748), as bound into every wrap. */
export function x25519PublicBytes(key: KeyObject): Buffer {
  return spki(key).subarray(-32);
}

/** SHA-256 over both public keys' SPKI, in hex: the key pair's full identity. */
export function publicKeyDigest(publicKey: EscrowPublicKey): string {
  return createHash('sha256').update(spki(publicKey.mlKem)).update(spki(publicKey.x25519)).digest('hex');
}

/**
 * 8 hex digits naming the key pair: printed by the CLI, carried by every share, and the key
 * version an escrow wrap's header records (so an envelope says which shares open it).
 */
export function fingerprint(publicKey: EscrowPublicKey): string {
  return publicKeyDigest(publicKey).slice(0, 8);
}

export function formatPublicKeyFile(publicKey: EscrowPublicKey): string {
  const pem = (key: KeyObject) => key.export({ format: 'pem', type: 'spki' }).toString();
  return (
    `# kms-broker escrow public key ${fingerprint(publicKey)}: ML-KEM-768 and X25519.\n` +
    `# It can wrap for the escrow, never unwrap; the private key exists only as Shamir shares.\n` +
    pem(publicKey.mlKem) +
    pem(publicKey.x25519)
  );
}

const PEM_BLOCK = /-----BEGIN ([A-Z ]+)-----\r?\n([A-Za-z0-9+/=\r\n]+?)-----END \1-----/g;

/** Parses the public key file's text; `file` names it in every refusal. */
export function parsePublicKeyFile(text: string, file: string): EscrowPublicKey {
  const read = readPublicKey(text);
  if ('problem' in read)
    throw new BrokerError(
      'ESCROW_KEY_INVALID',
      `escrow public key ${file}: ${read.problem}; use the escrow-public.pem that \`kms-broker escrow init\` wrote`,
    );
  return read.key;
}

/** The key a public key file holds, or what is wrong with it (never quoting the file). */
export function readPublicKey(
  text: string,
): { readonly key: EscrowPublicKey } | { readonly problem: string } {
  const found = new Map<string, KeyObject>();
  for (const [, label, body] of text.matchAll(PEM_BLOCK)) {
    if (label !== 'PUBLIC KEY')
      return { problem: `holds a ${String(label)} block, only PUBLIC KEY blocks belong there` };
    let key: KeyObject;
    try {
      key = createPublicKey({ key: Buffer.from(String(body), 'base64'), format: 'der', type: 'spki' });
    } catch {
      return { problem: 'a PUBLIC KEY block is not a valid public key' };
    }
    const type = String(key.asymmetricKeyType);
    if (type !== 'ml-kem-768' && type !== 'x25519')
      return { problem: `holds a ${type} key; it needs one ml-kem-768 and one x25519 key` };
    if (found.has(type)) return { problem: `holds two ${type} keys; it needs exactly one of each` };
    found.set(type, key);
  }
  const mlKem = found.get('ml-kem-768');
  const x25519 = found.get('x25519');
  if (mlKem === undefined || x25519 === undefined)
    return { problem: `lacks its ${mlKem === undefined ? 'ml-kem-768' : 'x25519'} PUBLIC KEY block` };
  return { key: { mlKem, x25519 } };
}

/** The private key as the bytes that are shared. The caller wipes them when done. */
export function encodePrivateKey(privateKey: EscrowPrivateKey): Buffer {
  const mlKem = privateKey.mlKem.export({ format: 'der', type: 'pkcs8' });
  const x25519 = privateKey.x25519.export({ format: 'der', type: 'pkcs8' });
  const mlKemOk =
    mlKem.length === ML_KEM_BOTH_PREFIX.length + ML_KEM_SEED_BYTES + 2404 &&
    mlKem.subarray(0, ML_KEM_BOTH_PREFIX.length).equals(ML_KEM_BOTH_PREFIX);
  const x25519Ok =
    x25519.length === X25519_PREFIX.length + X25519_PRIVATE_BYTES &&
    x25519.subarray(0, X25519_PREFIX.length).equals(X25519_PREFIX);
  // A runtime that exports another layout must stop the ceremony, not share wrong bytes.
  if (!mlKemOk || !x25519Ok)
    throw new BrokerError('INTERNAL', 'this Node.js exports escrow private keys in an unknown layout');
  const seed = mlKem.subarray(ML_KEM_BOTH_PREFIX.length, ML_KEM_BOTH_PREFIX.length + ML_KEM_SEED_BYTES);
  const bytes = Buffer.concat([Buffer.of(PRIVATE_KEY_VERSION), seed, x25519.subarray(X25519_PREFIX.length)]);
  mlKem.fill(0);
  x25519.fill(0);
  return bytes;
}

/** Rebuilds the private key from its shared bytes; undefined when they are not such bytes. */
export function decodePrivateKey(bytes: Uint8Array): EscrowPrivateKey | undefined {
  if (bytes.length !== PRIVATE_KEY_BYTES || bytes[0] !== PRIVATE_KEY_VERSION) return undefined;
  const seed = bytes.subarray(1, 1 + ML_KEM_SEED_BYTES);
  const scalar = bytes.subarray(1 + ML_KEM_SEED_BYTES);
  const mlKemDer = Buffer.concat([ML_KEM_SEED_ONLY_PREFIX, seed]);
  const x25519Der = Buffer.concat([X25519_PREFIX, scalar]);
  try {
    return {
      mlKem: createPrivateKey({ key: mlKemDer, format: 'der', type: 'pkcs8' }),
      x25519: createPrivateKey({ key: x25519Der, format: 'der', type: 'pkcs8' }),
    };
  } catch {
    return undefined;
  } finally {
    mlKemDer.fill(0);
    x25519Der.fill(0);
  }
}
