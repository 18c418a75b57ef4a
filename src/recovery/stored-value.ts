// The parts of a stored value that recovery needs, as bytes: the broker's envelopes (to unwrap
// the seed) and the encrypted data (to decrypt it). The usage scan's reader (stored-format.ts)
// says what a value is and whether it is the broker's, and deliberately keeps no bytes; this
// one is used only on the values it calls the broker's, with the same codecs.
import { createHash } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';
import {
  annotationWraps,
  checkWrapsBelongTogether,
  decodeEnvelope,
  type ParsedEnvelope,
} from '../broker/envelope.ts';
import { decodeWrapSet } from '../grpc/wrap-set.ts';
import { readStoredValue, type StoredReading } from '../usage/stored-format.ts';

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

const root = new protobuf.Root().loadSync(
  fileURLToPath(new URL('../../proto/kms-v2-encrypted-object.proto', import.meta.url)),
  { keepCase: true },
);
const EncryptedObject = root.lookupType('v2.EncryptedObject');

interface EncryptedObjectMessage {
  encryptedData?: Uint8Array;
  encryptedDEKSource?: Uint8Array;
  annotations?: Record<string, Uint8Array>;
  encryptedDEKSourceType?: number;
}

export function readValue(value: Buffer): ReadValue {
  const reading = readStoredValue(value);
  const kind = kindOf(reading);
  if (kind !== 'kms-v2' && kind !== 'kms-v1') return { kind };
  // The reader decoded these same bytes to the broker's envelopes; should this decoding still
  // fail, the value is counted as undecodable rather than stopping the drill.
  const rest = value.subarray(value.indexOf(0x3a, 'k8s:enc:kms:v2:'.length) + 1);
  try {
    return kind === 'kms-v2' ? readV2(rest) : readV1(rest);
  } catch {
    return { kind: 'broker-undecodable' };
  }
}

function kindOf(reading: StoredReading): ValueKind {
  if (reading.format !== 'kms-v2' && reading.format !== 'kms-v1') return reading.format;
  if (reading.broker.owner === 'broker-undecodable') return 'broker-undecodable';
  if (reading.broker.owner === 'other') return `${reading.format}-other-plugin`;
  return reading.format;
}

function readV2(bytes: Buffer): BrokerValue {
  const message = EncryptedObject.decode(bytes) as EncryptedObjectMessage;
  const source = Buffer.from(message.encryptedDEKSource ?? new Uint8Array(0));
  const annotations = Object.fromEntries(
    Object.entries(message.annotations ?? {}).map(([key, value]) => [key, Buffer.from(value)]),
  );
  const wraps = [decodeEnvelope(source), ...annotationWraps(annotations)];
  checkWrapsBelongTogether(wraps);
  return {
    kind: 'kms-v2',
    seedId: seedIdOf(source),
    wraps,
    sourceType: message.encryptedDEKSourceType ?? 0,
    encryptedData: Buffer.from(message.encryptedData ?? new Uint8Array(0)),
  };
}

function readV1(bytes: Buffer): BrokerValue {
  const length = bytes.readUInt16BE(0);
  const cipher = bytes.subarray(2, 2 + length);
  const wraps = decodeWrapSet(cipher).map(wrap => decodeEnvelope(wrap));
  checkWrapsBelongTogether(wraps);
  return { kind: 'kms-v1', seedId: seedIdOf(cipher), wraps, encryptedData: bytes.subarray(2 + length) };
}

function seedIdOf(ciphertext: Buffer): string {
  return createHash('sha256').update(ciphertext).digest('base64url').slice(0, 22);
}
