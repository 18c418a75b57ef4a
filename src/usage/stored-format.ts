// How one value stored in etcd is protected, read from its bytes alone: never decrypted, no
// key needed. The apiserver's layouts (k8s.io/apiserver pkg/storage/value/encrypt):
//   KMS v2   "k8s:enc:kms:v2:<provider>:" || EncryptedObject (proto/kms-v2-encrypted-object.proto)
//   KMS v1   "k8s:enc:kms:v1:<provider>:" || uint16 BE len(DEK ciphertext) || DEK ciphertext || data
//   aescbc, aesgcm, secretbox   "k8s:enc:<kind>:v1:<key name>:" || data
//   identity   anything else (Kubernetes' own "k8s\0" protobuf, JSON, ...)
// KMS values whose DEK ciphertext is the broker's are read down to its envelopes, with the
// broker's own codecs, to say which backend key versions can unwrap them. readStoredValue
// tells everything that is not secret (for `kms-broker inspect`); decodeStoredValue sums it
// up for the usage scan. Total: any bytes yield an answer, never an exception.
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';
import {
  annotationWraps,
  BOUND_ENVELOPE_MAGIC,
  checkWrapsBelongTogether,
  decodeEnvelope,
  ENVELOPE_MAGIC,
  type ParsedEnvelope,
  WRAP_ANNOTATION_SUFFIX,
} from '../broker/envelope.ts';
import { isBrokerError } from '../errors.ts';
import { isOwnKeyId } from '../broker/keys/key-id.ts';
import type { ScannedWrap, StoredFormat } from '../broker/usage-scan.ts';
import { decodeWrapSet, WRAP_SET_MAGIC } from '../grpc/wrap-set.ts';

/** Whose the DEK ciphertext of a KMS value is, as far as its bytes tell. */
export type Ownership =
  /** The broker's, decoded to its envelopes: these backend key versions can unwrap it. */
  | { readonly owner: 'broker'; readonly wraps: readonly ScannedWrap[] }
  /** Marked as the broker's (its key_id shape or envelope magic) but not decodable. */
  | { readonly owner: 'broker-undecodable' }
  /** Another plugin's, or too damaged to say. */
  | { readonly owner: 'other' };

export type StoredValue =
  | {
      readonly format: 'kms-v2';
      readonly provider: string;
      /** Absent when the EncryptedObject does not decode or carries none. */
      readonly keyId?: string;
      readonly ownership: Ownership;
    }
  | { readonly format: 'kms-v1'; readonly provider: string; readonly ownership: Ownership }
  | { readonly format: Exclude<StoredFormat, 'kms-v2' | 'kms-v1'> };

/** One wrap of a broker envelope as its header tells it; of the wrapped bytes only their length. */
export interface WrapReading {
  readonly backend: string;
  readonly version: string;
  readonly mechanism: string;
  /** 1: "kbr\x01", wraps not bound together; 3: "kbr\x03", bound to one envelope id and seed. */
  readonly envelopeFormat: 1 | 3;
  /** KMS v2: the EncryptResponse ciphertext or an annotation; KMS v1: always its wrap set. */
  readonly location: 'ciphertext' | 'annotation';
  /** The annotation's name, for a wrap that travels in one. */
  readonly annotation?: string;
  readonly wrappedBytes: number;
}

/** What the broker's codecs make of a KMS value's DEK ciphertext: Ownership, in detail. */
export type BrokerReading =
  | { readonly owner: 'broker'; readonly wraps: readonly WrapReading[] }
  /** `reason` is the envelope codec's own message (never bytes of the value). */
  | { readonly owner: 'broker-undecodable'; readonly reason: string }
  | { readonly owner: 'other' };

/** The EncryptedObject's fields that are not secret: names and lengths, never bytes. */
export interface EncryptedObjectReading {
  readonly keyId?: string;
  /** EncryptedDEKSourceType's name (or "unknown (n)"). */
  readonly dekSourceType: string;
  readonly dekSourceBytes: number;
  readonly dataBytes: number;
  readonly annotations: readonly string[];
}

/** Everything a value's bytes tell about how it is stored, without its secrets. */
export type StoredReading =
  | {
      readonly format: 'kms-v2';
      readonly provider: string;
      /** Absent when the bytes after the prefix are no EncryptedObject. */
      readonly object?: EncryptedObjectReading;
      readonly broker: BrokerReading;
    }
  | {
      readonly format: 'kms-v1';
      readonly provider: string;
      /** Absent when the length-prefixed DEK ciphertext does not fit in the value. */
      readonly dekCiphertextBytes?: number;
      readonly broker: BrokerReading;
    }
  | { readonly format: (typeof LOCAL_KINDS)[number]; readonly keyName: string }
  | { readonly format: 'identity' };

const KMS_V2 = Buffer.from('k8s:enc:kms:v2:', 'latin1');
const KMS_V1 = Buffer.from('k8s:enc:kms:v1:', 'latin1');
const LOCAL_KINDS = ['aescbc', 'aesgcm', 'secretbox'] as const;
const LOCAL_PREFIXES = LOCAL_KINDS.map(kind => [kind, Buffer.from(`k8s:enc:${kind}:v1:`, 'latin1')] as const);
/** Provider and key names are short; a value with no ':' within this many bytes is not one. */
const MAX_NAME_BYTES = 256;
const COLON = 0x3a;
const OTHER = { owner: 'other' } as const;

const kmsV2Root = new protobuf.Root().loadSync(
  fileURLToPath(new URL('../../proto/kms-v2-encrypted-object.proto', import.meta.url)),
  { keepCase: true },
);
const EncryptedObject = kmsV2Root.lookupType('v2.EncryptedObject');
const DekSourceType = kmsV2Root.lookupEnum('v2.EncryptedDEKSourceType');

interface EncryptedObjectMessage {
  encryptedData?: Uint8Array;
  keyID?: string;
  encryptedDEKSource?: Uint8Array;
  annotations?: Record<string, Uint8Array>;
  encryptedDEKSourceType?: number;
}

/** How the usage scan counts a value: its format and the backend key versions it needs. */
export function decodeStoredValue(value: Buffer): StoredValue {
  const reading = readStoredValue(value);
  switch (reading.format) {
    case 'kms-v2': {
      const keyId = reading.object?.keyId;
      return {
        format: 'kms-v2',
        provider: reading.provider,
        ...(keyId !== undefined && { keyId }),
        ownership: ownershipOf(reading.broker),
      };
    }
    case 'kms-v1':
      return { format: 'kms-v1', provider: reading.provider, ownership: ownershipOf(reading.broker) };
    default:
      return { format: reading.format };
  }
}

export function readStoredValue(value: Buffer): StoredReading {
  const v2 = afterName(value, KMS_V2);
  if (v2 !== undefined) return { format: 'kms-v2', provider: v2.name, ...readKmsV2(v2.rest) };
  const v1 = afterName(value, KMS_V1);
  if (v1 !== undefined) return { format: 'kms-v1', provider: v1.name, ...readKmsV1(v1.rest) };
  for (const [kind, prefix] of LOCAL_PREFIXES) {
    const local = afterName(value, prefix);
    if (local !== undefined) return { format: kind, keyName: local.name };
  }
  return { format: 'identity' };
}

/** The backend versions a value needs, each once and sorted. */
function ownershipOf(broker: BrokerReading): Ownership {
  if (broker.owner !== 'broker') return { owner: broker.owner };
  const wraps = new Map<string, ScannedWrap>();
  for (const { backend, version } of broker.wraps) wraps.set(`${backend}\0${version}`, { backend, version });
  return { owner: 'broker', wraps: [...wraps.values()].sort(compareWraps) };
}

/** The name after `prefix` (up to the next ':') and the bytes after it, if `value` has that form. */
function afterName(value: Buffer, prefix: Buffer): { name: string; rest: Buffer } | undefined {
  if (value.length <= prefix.length || !value.subarray(0, prefix.length).equals(prefix)) return undefined;
  const end = value.indexOf(COLON, prefix.length);
  if (end <= prefix.length || end - prefix.length > MAX_NAME_BYTES) return undefined;
  return { name: value.subarray(prefix.length, end).toString('utf8'), rest: value.subarray(end + 1) };
}

function readKmsV2(bytes: Buffer): { object?: EncryptedObjectReading; broker: BrokerReading } {
  let message: EncryptedObjectMessage;
  try {
    message = EncryptedObject.decode(bytes) as EncryptedObjectMessage;
  } catch {
    return { broker: OTHER };
  }
  const keyId = message.keyID === undefined || message.keyID === '' ? undefined : message.keyID;
  const source = Buffer.from(message.encryptedDEKSource ?? new Uint8Array(0));
  const annotations = Object.fromEntries(
    Object.entries(message.annotations ?? {}).map(([key, value]) => [key, Buffer.from(value)]),
  );
  const type = message.encryptedDEKSourceType ?? 0;
  const object: EncryptedObjectReading = {
    ...(keyId !== undefined && { keyId }),
    dekSourceType: DekSourceType.valuesById[type] ?? `unknown (${type})`,
    dekSourceBytes: source.length,
    dataBytes: message.encryptedData?.length ?? 0,
    annotations: Object.keys(annotations).sort(),
  };
  const marked =
    (keyId !== undefined && isOwnKeyId(keyId)) ||
    startsWith(source, BOUND_ENVELOPE_MAGIC) ||
    startsWith(source, ENVELOPE_MAGIC);
  if (!marked) return { object, broker: OTHER };
  const broker = brokerWraps(() => [
    { envelope: decodeEnvelope(source), location: 'ciphertext' },
    // annotationWraps checked that each sits in the annotation named after its backend.
    ...annotationWraps(annotations).map(envelope => ({
      envelope,
      location: 'annotation' as const,
      annotation: `${envelope.header.backend}${WRAP_ANNOTATION_SUFFIX}`,
    })),
  ]);
  return { object, broker };
}

function readKmsV1(bytes: Buffer): { dekCiphertextBytes?: number; broker: BrokerReading } {
  if (bytes.length < 2) return { broker: OTHER };
  const length = bytes.readUInt16BE(0);
  if (length === 0 || 2 + length > bytes.length) return { broker: OTHER };
  const cipher = bytes.subarray(2, 2 + length);
  if (!startsWith(cipher, WRAP_SET_MAGIC)) return { dekCiphertextBytes: length, broker: OTHER };
  const broker = brokerWraps(() =>
    decodeWrapSet(cipher).map(wrap => ({ envelope: decodeEnvelope(wrap), location: 'ciphertext' as const })),
  );
  return { dekCiphertextBytes: length, broker };
}

interface PlacedEnvelope {
  readonly envelope: ParsedEnvelope;
  readonly location: WrapReading['location'];
  readonly annotation?: string;
}

/** The wraps of envelopes that decode and were written together; else why not. */
function brokerWraps(decode: () => PlacedEnvelope[]): BrokerReading {
  let placed: PlacedEnvelope[];
  try {
    placed = decode();
    checkWrapsBelongTogether(placed.map(({ envelope }) => envelope));
  } catch (error) {
    return { owner: 'broker-undecodable', reason: isBrokerError(error) ? error.message : 'malformed' };
  }
  return {
    owner: 'broker',
    wraps: placed.map(({ envelope: { header, aad, wrapped }, location, annotation }) => ({
      backend: header.backend,
      version: header.keyVersion,
      mechanism: header.mechanism,
      envelopeFormat: aad.subarray(0, BOUND_ENVELOPE_MAGIC.length).equals(BOUND_ENVELOPE_MAGIC) ? 3 : 1,
      location,
      ...(annotation !== undefined && { annotation }),
      wrappedBytes: wrapped.length,
    })),
  };
}

export function compareWraps(a: ScannedWrap, b: ScannedWrap): number {
  return a.backend === b.backend ? compare(a.version, b.version) : compare(a.backend, b.backend);
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function startsWith(bytes: Buffer, magic: Buffer): boolean {
  return bytes.length > magic.length && bytes.subarray(0, magic.length).equals(magic);
}
