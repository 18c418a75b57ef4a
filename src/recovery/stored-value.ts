// The parts of a stored value that recovery needs, as bytes: the broker's envelopes (to unwrap
// the seed) and the encrypted data (to decrypt it), from the one decoder of stored values
// (stored-format.ts), summed up as the drill counts values.
import { createHash } from 'node:crypto';
import type { ParsedEnvelope } from '../broker/envelope.ts';
import { parseStoredValue } from '../usage/stored-parse.ts';

/** How the drill counts a value: the broker's (by KMS API), another's, or a local/plain format. */
export type ValueKind =
  | 'kms-v2'
  | 'kms-v1'
  | 'kms-v2-other-plugin'
  | 'kms-v1-other-plugin'
  | 'broker-undecodable'
  | 'aescbc'
  | 'aesgcm'
  | 'secretbox'
  | 'identity';

/** A value whose seed (KMS v2) or DEK (KMS v1) the broker wrapped, with what decrypts it. */
export interface BrokerValue {
  readonly kind: 'kms-v2' | 'kms-v1';
  /** SHA-256 of the DEK ciphertext: names the seed in caches and state, reveals nothing. */
  readonly seedId: string;
  readonly wraps: readonly ParsedEnvelope[];
  /** KMS v2: EncryptedDEKSourceType; KMS v1: undefined. */
  readonly sourceType?: number;
  readonly encryptedData: Buffer;
}

export type ReadValue = { readonly kind: Exclude<ValueKind, 'kms-v2' | 'kms-v1'> } | BrokerValue;

export function readValue(value: Buffer): ReadValue {
  const parsed = parseStoredValue(value);
  if (parsed.format !== 'kms-v2' && parsed.format !== 'kms-v1') return { kind: parsed.format };
  const { broker } = parsed;
  if (broker.owner === 'broker-undecodable') return { kind: 'broker-undecodable' };
  if (broker.owner === 'other') return { kind: `${parsed.format}-other-plugin` };
  return {
    kind: parsed.format,
    seedId: seedIdOf(parsed.dekCiphertext),
    wraps: broker.envelopes.map(({ envelope }) => envelope),
    ...(parsed.format === 'kms-v2' && { sourceType: parsed.sourceType }),
    encryptedData: parsed.encryptedData,
  };
}

function seedIdOf(ciphertext: Buffer): string {
  return createHash('sha256').update(ciphertext).digest('base64url').slice(0, 22);
}
