// How one value stored in etcd is protected, read from its bytes alone: never decrypted, no
// key needed. The apiserver's layouts (k8s.io/apiserver pkg/storage/value/encrypt):
//   KMS v2   "k8s:enc:kms:v2:<provider>:" || EncryptedObject (proto/kms-v2-encrypted-object.proto)
//   KMS v1   "k8s:enc:kms:v1:<provider>:" || uint16 BE len(DEK ciphertext) || DEK ciphertext || data
//   aescbc, aesgcm, secretbox   "k8s:enc:<kind>:v1:<key name>:" || data
//   identity   anything else (Kubernetes' own "k8s\0" protobuf, JSON, ...)
// KMS values whose DEK ciphertext is the broker's are read down to its envelopes, with the
// broker's own codecs, to say which backend key versions can unwrap them. Total: any bytes
// yield an answer, never an exception.
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';
import {
  annotationWraps,
  BOUND_ENVELOPE_MAGIC,
  checkWrapsBelongTogether,
  decodeEnvelope,
  ENVELOPE_MAGIC,
  type ParsedEnvelope,
} from '../broker/envelope.ts';
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

const KMS_V2 = Buffer.from('k8s:enc:kms:v2:', 'latin1');
const KMS_V1 = Buffer.from('k8s:enc:kms:v1:', 'latin1');
const LOCAL_KINDS = ['aescbc', 'aesgcm', 'secretbox'] as const;
const LOCAL_PREFIXES = LOCAL_KINDS.map(kind => [kind, Buffer.from(`k8s:enc:${kind}:v1:`, 'latin1')] as const);
/** Provider and key names are short; a value with no ':' within this many bytes is not one. */
const MAX_NAME_BYTES = 256;
const COLON = 0x3a;
const OTHER: Ownership = { owner: 'other' };
const UNDECODABLE: Ownership = { owner: 'broker-undecodable' };

const EncryptedObject = new protobuf.Root()
  .loadSync(fileURLToPath(new URL('../../proto/kms-v2-encrypted-object.proto', import.meta.url)), {
    keepCase: true,
  })
  .lookupType('v2.EncryptedObject');

interface EncryptedObjectMessage {
  keyID?: string;
  encryptedDEKSource?: Uint8Array;
  annotations?: Record<string, Uint8Array>;
}

export function decodeStoredValue(value: Buffer): StoredValue {
  const v2 = afterName(value, KMS_V2);
  if (v2 !== undefined) return { format: 'kms-v2', provider: v2.name, ...decodeKmsV2(v2.rest) };
  const v1 = afterName(value, KMS_V1);
  if (v1 !== undefined) return { format: 'kms-v1', provider: v1.name, ownership: decodeKmsV1(v1.rest) };
  for (const [kind, prefix] of LOCAL_PREFIXES)
    if (afterName(value, prefix) !== undefined) return { format: kind };
  return { format: 'identity' };
}

/** The name after `prefix` (up to the next ':') and the bytes after it, if `value` has that form. */
function afterName(value: Buffer, prefix: Buffer): { name: string; rest: Buffer } | undefined {
  if (value.length <= prefix.length || !value.subarray(0, prefix.length).equals(prefix)) return undefined;
  const end = value.indexOf(COLON, prefix.length);
  if (end <= prefix.length || end - prefix.length > MAX_NAME_BYTES) return undefined;
  return { name: value.subarray(prefix.length, end).toString('utf8'), rest: value.subarray(end + 1) };
}

function decodeKmsV2(bytes: Buffer): { keyId?: string; ownership: Ownership } {
  let object: EncryptedObjectMessage;
  try {
    object = EncryptedObject.decode(bytes) as EncryptedObjectMessage;
  } catch {
    return { ownership: OTHER };
  }
  const keyId = object.keyID === undefined || object.keyID === '' ? undefined : object.keyID;
  const source = Buffer.from(object.encryptedDEKSource ?? new Uint8Array(0));
  const marked =
    (keyId !== undefined && isOwnKeyId(keyId)) ||
    startsWith(source, BOUND_ENVELOPE_MAGIC) ||
    startsWith(source, ENVELOPE_MAGIC);
  if (!marked) return { ...(keyId !== undefined && { keyId }), ownership: OTHER };
  const annotations = Object.fromEntries(
    Object.entries(object.annotations ?? {}).map(([key, value]) => [key, Buffer.from(value)]),
  );
  const ownership = brokerWraps(() => [decodeEnvelope(source), ...annotationWraps(annotations)]);
  return { ...(keyId !== undefined && { keyId }), ownership };
}

function decodeKmsV1(bytes: Buffer): Ownership {
  if (bytes.length < 2) return OTHER;
  const length = bytes.readUInt16BE(0);
  if (length === 0 || 2 + length > bytes.length) return OTHER;
  const cipher = bytes.subarray(2, 2 + length);
  if (!startsWith(cipher, WRAP_SET_MAGIC)) return OTHER;
  return brokerWraps(() => decodeWrapSet(cipher).map(wrap => decodeEnvelope(wrap)));
}

/** The backend versions of envelopes that decode and were written together; else undecodable. */
function brokerWraps(decode: () => ParsedEnvelope[]): Ownership {
  let envelopes: ParsedEnvelope[];
  try {
    envelopes = decode();
    checkWrapsBelongTogether(envelopes);
  } catch {
    return UNDECODABLE;
  }
  const wraps = new Map<string, ScannedWrap>();
  for (const { header } of envelopes)
    wraps.set(`${header.backend}\0${header.keyVersion}`, {
      backend: header.backend,
      version: header.keyVersion,
    });
  return { owner: 'broker', wraps: [...wraps.values()].sort(compareWraps) };
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
