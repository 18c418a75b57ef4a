// One decoder of the values kube-apiserver stores in etcd, down to their bytes: which format,
// which provider, and for KMS values whose DEK ciphertext is the broker's, its envelopes (with
// the broker's own codecs) and the encrypted data. The apiserver's layouts
// (k8s.io/apiserver pkg/storage/value/encrypt):
//   KMS v2   "k8s:enc:kms:v2:<provider>:" || EncryptedObject (proto/kms-v2-encrypted-object.proto)
//   KMS v1   "k8s:enc:kms:v1:<provider>:" || uint16 BE len(DEK ciphertext) || DEK ciphertext || data
//   aescbc, aesgcm, secretbox   "k8s:enc:<kind>:v1:<key name>:" || data
//   identity   anything else (Kubernetes' own "k8s\0" protobuf, JSON, ...)
// stored-format.ts sums it up without bytes (inspect, the usage scan); recovery uses the bytes.
// Total: any bytes yield an answer, never an exception.
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
import { isOwnKeyId } from '../broker/keys/key-id.ts';
import { isBrokerError } from '../errors.ts';
import { decodeWrapSet, WRAP_SET_MAGIC } from '../grpc/wrap-set.ts';

/** The EncryptedObject's fields that are not secret: names and lengths, never bytes. */
export interface EncryptedObjectReading {
  readonly keyId?: string;
  /** EncryptedDEKSourceType's name (or "unknown (n)"). */
  readonly dekSourceType: string;
  readonly dekSourceBytes: number;
  readonly dataBytes: number;
  readonly annotations: readonly string[];
}

const KMS_V2 = Buffer.from('k8s:enc:kms:v2:', 'latin1');
const KMS_V1 = Buffer.from('k8s:enc:kms:v1:', 'latin1');
export const LOCAL_KINDS = ['aescbc', 'aesgcm', 'secretbox'] as const;
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

/**
 * A stored value decoded down to its bytes: the broker's envelopes (to unwrap the seed) and the
 * encrypted data (to decrypt it), for recovery; readStoredValue keeps only what is not secret.
 */
export type ParsedStoredValue =
  | {
      readonly format: 'kms-v2';
      readonly provider: string;
      readonly object?: EncryptedObjectReading;
      readonly broker: ParsedBroker;
      readonly dekCiphertext: Buffer;
      readonly sourceType: number;
      readonly encryptedData: Buffer;
    }
  | {
      readonly format: 'kms-v1';
      readonly provider: string;
      readonly dekCiphertextBytes?: number;
      readonly broker: ParsedBroker;
      readonly dekCiphertext: Buffer;
      readonly encryptedData: Buffer;
    }
  | { readonly format: (typeof LOCAL_KINDS)[number]; readonly keyName: string }
  | { readonly format: 'identity' };

/** The broker's envelopes of a KMS value, each with where it travels; or why there are none. */
export type ParsedBroker =
  | { readonly owner: 'broker'; readonly envelopes: readonly PlacedEnvelope[] }
  | { readonly owner: 'broker-undecodable'; readonly reason: string }
  | { readonly owner: 'other' };

export function parseStoredValue(value: Buffer): ParsedStoredValue {
  const v2 = afterName(value, KMS_V2);
  if (v2 !== undefined) return { format: 'kms-v2', provider: v2.name, ...parseKmsV2(v2.rest) };
  const v1 = afterName(value, KMS_V1);
  if (v1 !== undefined) return { format: 'kms-v1', provider: v1.name, ...parseKmsV1(v1.rest) };
  for (const [kind, prefix] of LOCAL_PREFIXES) {
    const local = afterName(value, prefix);
    if (local !== undefined) return { format: kind, keyName: local.name };
  }
  return { format: 'identity' };
}

/** The name after `prefix` (up to the next ':') and the bytes after it, if `value` has that form. */
function afterName(value: Buffer, prefix: Buffer): { name: string; rest: Buffer } | undefined {
  if (value.length <= prefix.length || !value.subarray(0, prefix.length).equals(prefix)) return undefined;
  const end = value.indexOf(COLON, prefix.length);
  if (end <= prefix.length || end - prefix.length > MAX_NAME_BYTES) return undefined;
  return { name: value.subarray(prefix.length, end).toString('utf8'), rest: value.subarray(end + 1) };
}

const EMPTY = Buffer.alloc(0);

function parseKmsV2(bytes: Buffer): {
  object?: EncryptedObjectReading;
  broker: ParsedBroker;
  dekCiphertext: Buffer;
  sourceType: number;
  encryptedData: Buffer;
} {
  let message: EncryptedObjectMessage;
  try {
    message = EncryptedObject.decode(bytes) as EncryptedObjectMessage;
  } catch {
    return { broker: OTHER, dekCiphertext: EMPTY, sourceType: 0, encryptedData: EMPTY };
  }
  const keyId = message.keyID === undefined || message.keyID === '' ? undefined : message.keyID;
  const source = Buffer.from(message.encryptedDEKSource ?? new Uint8Array(0));
  const annotations = Object.fromEntries(
    Object.entries(message.annotations ?? {}).map(([key, value]) => [key, Buffer.from(value)]),
  );
  const type = message.encryptedDEKSourceType ?? 0;
  const encryptedData = Buffer.from(message.encryptedData ?? new Uint8Array(0));
  const object: EncryptedObjectReading = {
    ...(keyId !== undefined && { keyId }),
    dekSourceType: DekSourceType.valuesById[type] ?? `unknown (${type})`,
    dekSourceBytes: source.length,
    dataBytes: encryptedData.length,
    annotations: Object.keys(annotations).sort(),
  };
  const bytesOf = { dekCiphertext: source, sourceType: type, encryptedData };
  const marked =
    (keyId !== undefined && isOwnKeyId(keyId)) ||
    startsWith(source, BOUND_ENVELOPE_MAGIC) ||
    startsWith(source, ENVELOPE_MAGIC);
  if (!marked) return { object, broker: OTHER, ...bytesOf };
  const broker = brokerEnvelopes(() => [
    { envelope: decodeEnvelope(source), location: 'ciphertext' },
    // annotationWraps checked that each sits in the annotation named after its backend.
    ...annotationWraps(annotations).map(envelope => ({
      envelope,
      location: 'annotation' as const,
      annotation: `${envelope.header.backend}${WRAP_ANNOTATION_SUFFIX}`,
    })),
  ]);
  return { object, broker, ...bytesOf };
}

function parseKmsV1(bytes: Buffer): {
  dekCiphertextBytes?: number;
  broker: ParsedBroker;
  dekCiphertext: Buffer;
  encryptedData: Buffer;
} {
  const length = bytes.length < 2 ? 0 : bytes.readUInt16BE(0);
  if (length === 0 || 2 + length > bytes.length)
    return { broker: OTHER, dekCiphertext: EMPTY, encryptedData: EMPTY };
  const cipher = bytes.subarray(2, 2 + length);
  const bytesOf = {
    dekCiphertextBytes: length,
    dekCiphertext: cipher,
    encryptedData: bytes.subarray(2 + length),
  };
  if (!startsWith(cipher, WRAP_SET_MAGIC)) return { ...bytesOf, broker: OTHER };
  const broker = brokerEnvelopes(() =>
    decodeWrapSet(cipher).map(wrap => ({ envelope: decodeEnvelope(wrap), location: 'ciphertext' as const })),
  );
  return { ...bytesOf, broker };
}

export interface PlacedEnvelope {
  readonly envelope: ParsedEnvelope;
  /** KMS v2: the EncryptResponse ciphertext or an annotation; KMS v1: always its wrap set. */
  readonly location: 'ciphertext' | 'annotation';
  readonly annotation?: string;
}

/** The envelopes, if they decode and were written together; else why not. */
function brokerEnvelopes(decode: () => PlacedEnvelope[]): ParsedBroker {
  try {
    const envelopes = decode();
    checkWrapsBelongTogether(envelopes.map(({ envelope }) => envelope));
    return { owner: 'broker', envelopes };
  } catch (error) {
    return { owner: 'broker-undecodable', reason: isBrokerError(error) ? error.message : 'malformed' };
  }
}

function startsWith(bytes: Buffer, magic: Buffer): boolean {
  return bytes.length > magic.length && bytes.subarray(0, magic.length).equals(magic);
}
