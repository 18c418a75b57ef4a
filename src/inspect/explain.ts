// What `kms-broker inspect` says about one stored value, from its bytes alone: how kube-apiserver
// stored it (stored-format.ts reads it), or why these bytes are no value it stored. Carries
// names, versions and lengths only: never the plaintext, a wrapped DEK or seed, or key material.
import type { StoredFormat } from '../broker/usage-scan.ts';
import { isOwnKeyId } from '../broker/keys/key-id.ts';
import type {
  BrokerReading,
  EncryptedObjectReading,
  StoredReading,
  WrapReading,
} from '../usage/stored-format.ts';

/** Whether this broker could unwrap a wrap now; `reason` says why not, or why it is not known. */
export type UnwrapVerdict =
  | { readonly now: 'yes' }
  | { readonly now: 'no'; readonly reason: string }
  | { readonly now: 'unknown'; readonly reason: string };

export interface Explanation {
  /** Where the bytes came from: `etcd key /registry/...`, `file <path>`, `stdin`. */
  readonly source: string;
  readonly bytes: number;
  /** Absent when the bytes are no value kube-apiserver stored (see `problem`). */
  readonly format?: StoredFormat;
  readonly problem?: string;
  readonly provider?: string;
  readonly keyId?: string;
  /** Whether the key_id has the shape kms-broker issues. */
  readonly keyIdIsBrokers?: boolean;
  readonly encryptedObject?: Omit<EncryptedObjectReading, 'keyId'>;
  /** KMS v1: the length of the DEK ciphertext. */
  readonly dekCiphertextBytes?: number;
  /** aescbc, aesgcm, secretbox: the name of the key in the EncryptionConfiguration. */
  readonly keyName?: string;
  /** identity: what kind of plain text (the text itself is never shown). */
  readonly plainText?: string;
  /** KMS values: whether the DEK ciphertext is kms-broker's, and its wraps. */
  readonly broker?: BrokerExplanation;
}

export type BrokerExplanation =
  | { readonly owner: 'broker'; readonly wraps: readonly ExplainedWrap[] }
  | { readonly owner: 'broker-undecodable'; readonly reason: string }
  | { readonly owner: 'other' };

export interface ExplainedWrap extends WrapReading {
  readonly unwrap: UnwrapVerdict;
}

const ENCRYPTED_PREFIX = Buffer.from('k8s:enc:', 'latin1');
/** Kubernetes' protobuf encoding of built-in types (k8s.io/apimachinery runtime/serializer/protobuf). */
const PROTOBUF_MAGIC = Buffer.from('k8s\0', 'latin1');

/**
 * Explains `value`, which `reading` (readStoredValue) has read; `unwrap` judges each broker
 * wrap (by the admin API, or as unknown).
 */
export function explain(
  source: string,
  value: Buffer,
  reading: StoredReading,
  unwrap: (wrap: WrapReading) => UnwrapVerdict,
): Explanation {
  const base = { source, bytes: value.length };
  switch (reading.format) {
    case 'kms-v2': {
      const { keyId, ...object } = reading.object ?? {};
      if (reading.object === undefined)
        return {
          ...base,
          problem: `it starts with k8s:enc:kms:v2:${reading.provider}: but what follows is no KMS v2 EncryptedObject: damaged, or not a value kube-apiserver stored`,
        };
      return {
        ...base,
        format: 'kms-v2',
        provider: reading.provider,
        ...(keyId !== undefined && { keyId, keyIdIsBrokers: isOwnKeyId(keyId) }),
        encryptedObject: object as Omit<EncryptedObjectReading, 'keyId'>,
        broker: withVerdicts(reading.broker, unwrap),
      };
    }
    case 'kms-v1':
      if (reading.dekCiphertextBytes === undefined)
        return {
          ...base,
          problem: `it starts with k8s:enc:kms:v1:${reading.provider}: but carries no DEK ciphertext of the length it names: damaged, or not a value kube-apiserver stored`,
        };
      return {
        ...base,
        format: 'kms-v1',
        provider: reading.provider,
        dekCiphertextBytes: reading.dekCiphertextBytes,
        broker: withVerdicts(reading.broker, unwrap),
      };
    case 'identity': {
      const plainText = plainTextKind(value);
      return plainText === undefined
        ? { ...base, problem: notStored(value) }
        : { ...base, format: 'identity', plainText };
    }
    default:
      return { ...base, format: reading.format, keyName: reading.keyName };
  }
}

function withVerdicts(
  broker: BrokerReading,
  unwrap: (wrap: WrapReading) => UnwrapVerdict,
): BrokerExplanation {
  if (broker.owner !== 'broker') return broker;
  return { owner: 'broker', wraps: broker.wraps.map(wrap => ({ ...wrap, unwrap: unwrap(wrap) })) };
}

/** The two ways kube-apiserver stores an object unencrypted; undefined for anything else. */
function plainTextKind(value: Buffer): string | undefined {
  if (value.length > PROTOBUF_MAGIC.length && value.subarray(0, PROTOBUF_MAGIC.length).equals(PROTOBUF_MAGIC))
    return 'Kubernetes protobuf';
  if (value[0] !== 0x7b) return undefined; // '{': custom resources are stored as JSON objects
  try {
    const parsed: unknown = JSON.parse(value.toString('utf8'));
    return typeof parsed === 'object' && parsed !== null ? 'JSON' : undefined;
  } catch {
    return undefined;
  }
}

function notStored(value: Buffer): string {
  const why =
    value.length === 0
      ? 'it is empty'
      : value.subarray(0, ENCRYPTED_PREFIX.length).equals(ENCRYPTED_PREFIX)
        ? 'it starts with k8s:enc: but names no transformer kube-apiserver has (kms v1/v2, aescbc, aesgcm, secretbox), or its provider name is missing'
        : 'it is neither encrypted (k8s:enc:...) nor a Kubernetes object in protobuf (k8s\\0...) or JSON';
  return `not a value kube-apiserver stored: ${why}. Read it from etcd with --from-etcd <key>, or give the exact bytes of one value (etcdctl get --print-value-only adds a newline)`;
}
