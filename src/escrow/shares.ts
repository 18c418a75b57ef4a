// Splits the escrow private key into N Shamir shares of threshold M, and rebuilds it. The
// arithmetic is the audited `shamir-secret-sharing` package (GF(256), random x coordinates);
// this module adds what an operator needs around it: every share names its key pair, and a
// rebuilt key is checked against the public key, so a wrong set of shares is caught without
// unwrapping anything.
import { combine, split } from 'shamir-secret-sharing';
import { BrokerError } from '../errors.ts';
import {
  decodePrivateKey,
  encodePrivateKey,
  fingerprint,
  publicKeyOf,
  samePublicKey,
  type EscrowPrivateKey,
  type EscrowPublicKey,
} from './key-files.ts';
import type { EscrowShare } from './share-format.ts';

/** The bounds of the library (at most 255 shares) and of sense (one share is no escrow). */
export const MIN_THRESHOLD = 2;
export const MAX_SHARES = 255;

export async function splitPrivateKey(
  privateKey: EscrowPrivateKey,
  total: number,
  threshold: number,
): Promise<EscrowShare[]> {
  if (!Number.isInteger(total) || !Number.isInteger(threshold) || threshold < MIN_THRESHOLD)
    throw new BrokerError('INVALID_REQUEST', `a threshold of at least ${MIN_THRESHOLD} is needed`);
  if (total < threshold || total > MAX_SHARES)
    throw new BrokerError('INVALID_REQUEST', `the shares must number from the threshold to ${MAX_SHARES}`);
  const encoded = encodePrivateKey(privateKey);
  // The library checks for a plain Uint8Array, which a Buffer is not.
  const secret = new Uint8Array(encoded);
  encoded.fill(0);
  try {
    const parts = await split(secret, total, threshold);
    const keyFingerprint = fingerprint(publicKeyOf(privateKey));
    return parts.map((bytes, position) => ({
      index: position + 1,
      total,
      threshold,
      fingerprint: keyFingerprint,
      bytes: Buffer.from(bytes),
    }));
  } finally {
    secret.fill(0);
  }
}

/** A parsed share and the file (or other source) it came from, for the messages. */
export interface SourcedShare {
  readonly source: string;
  readonly share: EscrowShare;
}

/**
 * Rebuilds the private key from at least M shares and proves it is the one of `publicKey`
 * (named `publicKeyName` in messages). Refuses too few shares, shares of another key pair or
 * split, and the same share twice, naming the shares concerned.
 */
export async function combineShares(
  shares: readonly SourcedShare[],
  publicKey: EscrowPublicKey,
  publicKeyName: string,
): Promise<EscrowPrivateKey> {
  const refuse = (what: string) => new BrokerError('ESCROW_SHARES_INVALID', what);
  const expected = fingerprint(publicKey);
  for (const { source, share } of shares)
    if (share.fingerprint !== expected)
      throw refuse(
        `share ${source} belongs to escrow key ${share.fingerprint}, not to ${publicKeyName} (key ${expected}); use the shares of that key`,
      );
  const [first] = shares;
  if (first === undefined) throw refuse('no share was given');
  for (const { source, share } of shares)
    if (share.threshold !== first.share.threshold || share.total !== first.share.total)
      throw refuse(
        `share ${source} is from a split into ${share.total} (threshold ${share.threshold}), share ${first.source} from one into ${first.share.total} (threshold ${first.share.threshold}); use shares of one split`,
      );
  const seen = new Map<number, string>();
  for (const { source, share } of shares) {
    const earlier = seen.get(share.index);
    if (earlier !== undefined)
      throw refuse(`shares ${earlier} and ${source} are both share ${share.index}; each share counts once`);
    seen.set(share.index, source);
  }
  const { threshold, total } = first.share;
  if (shares.length < threshold)
    throw refuse(`${shares.length} share(s) given, the key needs ${threshold} of its ${total}`);
  const sameLength = shares.every(({ share }) => share.bytes.length === first.share.bytes.length);
  const secret = sameLength ? await combineBytes(shares.map(({ share }) => share.bytes)) : undefined;
  const privateKey = secret === undefined ? undefined : decodePrivateKey(secret);
  secret?.fill(0);
  // Shares that pass their checksums yet rebuild another key were made by hand or by another
  // tool: no share can be named, only the set.
  if (privateKey === undefined || !samePublicKey(publicKeyOf(privateKey), publicKey))
    throw refuse(
      `the shares ${shares.map(({ source }) => source).join(', ')} do not rebuild the private key of ${publicKeyName}`,
    );
  return privateKey;
}

async function combineBytes(parts: readonly Buffer[]): Promise<Uint8Array | undefined> {
  try {
    return await combine(parts.map(part => new Uint8Array(part)));
  } catch {
    // Two shares with the same x coordinate, or of unequal length: not one split's shares.
    return undefined;
  }
}
