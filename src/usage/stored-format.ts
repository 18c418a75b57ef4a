// How one value stored in etcd is protected, read from its bytes alone: never decrypted, no
// key needed, no bytes kept. KMS values whose DEK ciphertext is the broker's are read down to
// its envelopes (stored-parse.ts), to say which backend key versions can unwrap them.
// readStoredValue tells everything that is not secret (for `kms-broker inspect`);
// decodeStoredValue sums it up for the usage scan.
import { BOUND_ENVELOPE_MAGIC } from '../broker/envelope.ts';
import type { ScannedWrap, StoredFormat } from '../broker/usage-scan.ts';
import type { LOCAL_KINDS } from './stored-parse.ts';
import { parseStoredValue, type EncryptedObjectReading, type ParsedBroker } from './stored-parse.ts';

export type { EncryptedObjectReading } from './stored-parse.ts';

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
  const parsed = parseStoredValue(value);
  switch (parsed.format) {
    case 'kms-v2': {
      const { provider, object, broker } = parsed;
      return {
        format: 'kms-v2',
        provider,
        ...(object !== undefined && { object }),
        broker: readingOf(broker),
      };
    }
    case 'kms-v1': {
      const { provider, dekCiphertextBytes, broker } = parsed;
      return {
        format: 'kms-v1',
        provider,
        ...(dekCiphertextBytes !== undefined && { dekCiphertextBytes }),
        broker: readingOf(broker),
      };
    }
    default:
      return parsed;
  }
}

/** The backend versions a value needs, each once and sorted. */
function ownershipOf(broker: BrokerReading): Ownership {
  if (broker.owner !== 'broker') return { owner: broker.owner };
  const wraps = new Map<string, ScannedWrap>();
  for (const { backend, version } of broker.wraps) wraps.set(`${backend}\0${version}`, { backend, version });
  return { owner: 'broker', wraps: [...wraps.values()].sort(compareWraps) };
}

/** What the envelopes' headers tell, without their bytes. */
function readingOf(broker: ParsedBroker): BrokerReading {
  if (broker.owner !== 'broker') return broker;
  return {
    owner: 'broker',
    wraps: broker.envelopes.map(({ envelope: { header, aad, wrapped }, location, annotation }) => ({
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
