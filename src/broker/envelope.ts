// The versioned, self-describing envelope (proto/envelope.proto) that the broker returns
// as ciphertext: magic || Envelope{header, wrapped}. Two formats, both readable forever:
// "kbr\x01" (backend, key version, mechanism) and "kbr\x03", whose header also carries an
// envelope id and a commitment to the seed, binding every wrap of one Encrypt together.
// Parsing is bounded and total: anything that is not exactly one of these formats, in its
// one canonical encoding, becomes INVALID_CIPHERTEXT.
import { createHash, randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';
import { backendNameSchema } from '../backends/config-schema.ts';
import { BrokerError } from '../errors.ts';
import { MAX_WRAP_BYTES } from '../kms-limits.ts';
import { readCanonicalFields, writeFields } from './envelope-fields.ts';

/** Wraps beyond the first travel in annotations `<backend><suffix>` (lowercase FQDNs). */
export const WRAP_ANNOTATION_SUFFIX = '.wrap.kms-broker.io';
/** The first format: no binding between the wraps of one envelope. Read, no longer written. */
export const ENVELOPE_MAGIC = Buffer.from('kbr\x01', 'latin1');
/** The format written now: every wrap's header names its envelope and commits to its seed. */
export const BOUND_ENVELOPE_MAGIC = Buffer.from('kbr\x03', 'latin1');
const MAGIC_BYTES = 4;
const ENVELOPE_ID_BYTES = 16;
const COMMITMENT_BYTES = 32;
const MAX_KEY_VERSION_LENGTH = 128;
const MAX_MECHANISM_LENGTH = 32;
const COMMITMENT_LABEL = Buffer.from('kms-broker seed commitment v1\0', 'latin1');
const backendNamePattern = new RegExp(backendNameSchema.pattern as string);

// keepCase: field names as in the .proto (key_version), not camel-cased.
const root = new protobuf.Root().loadSync(
  fileURLToPath(new URL('../../proto/envelope.proto', import.meta.url)),
  { keepCase: true },
);
const WrapHeaderType = root.lookupType('kmsbroker.envelope.v1.WrapHeader');
const EnvelopeType = root.lookupType('kmsbroker.envelope.v1.Envelope');

/** What ties the wraps of one Encrypt together. */
export interface WrapBinding {
  /** Random, shared by every wrap of one Encrypt. */
  readonly envelopeId: Buffer;
  /** SHA-256(label || envelopeId || seed). */
  readonly commitment: Buffer;
}

export interface WrapHeader {
  readonly backend: string;
  readonly keyVersion: string;
  readonly mechanism: string;
  /** Absent only in envelopes of the first format. */
  readonly binding?: WrapBinding | undefined;
}

export interface ParsedEnvelope {
  readonly header: WrapHeader;
  /** The authenticated bytes: magic || serialized header. */
  readonly aad: Buffer;
  readonly wrapped: Buffer;
}

/** A fresh binding for the wraps of one seed. */
export function bindingFor(seed: Buffer): WrapBinding {
  const envelopeId = randomBytes(ENVELOPE_ID_BYTES);
  return { envelopeId, commitment: commitment(envelopeId, seed) };
}

/** Whether an unwrapped seed is the one its header committed to (true for the first format). */
export function commitsTo(header: WrapHeader, seed: Buffer): boolean {
  return (
    header.binding === undefined ||
    header.binding.commitment.equals(commitment(header.binding.envelopeId, seed))
  );
}

function commitment(envelopeId: Buffer, seed: Buffer): Buffer {
  return createHash('sha256').update(COMMITMENT_LABEL).update(envelopeId).update(seed).digest();
}

/**
 * Refuses wraps that were not written together: once any wrap is bound, every wrap must be
 * bound to the same envelope id and seed commitment. Only a set of first-format wraps, which
 * carry nothing to compare, is taken as it is.
 */
export function checkWrapsBelongTogether(envelopes: readonly ParsedEnvelope[]): void {
  const bound = envelopes.find(envelope => envelope.header.binding !== undefined)?.header.binding;
  if (bound === undefined) return;
  for (const { header } of envelopes) {
    if (
      header.binding === undefined ||
      !header.binding.envelopeId.equals(bound.envelopeId) ||
      !header.binding.commitment.equals(bound.commitment)
    ) {
      throw malformed(`the wrap of backend '${header.backend}' belongs to another envelope`);
    }
  }
}

/**
 * The wraps of a KMS v2 envelope beyond the first, each in the annotation named after its own
 * backend; other annotations are not the broker's and are left alone.
 */
export function annotationWraps(annotations: Readonly<Record<string, Buffer>>): ParsedEnvelope[] {
  return Object.entries(annotations).flatMap(([key, value]) => {
    if (!key.endsWith(WRAP_ANNOTATION_SUFFIX)) return [];
    const envelope = decodeEnvelope(value);
    if (`${envelope.header.backend}${WRAP_ANNOTATION_SUFFIX}` !== key)
      throw malformed(`annotation ${key} carries a wrap of another backend`);
    return [envelope];
  });
}

/** Serializes a header and returns the AAD that a wrap under it must bind. */
export function headerAad(header: WrapHeader): Buffer {
  const fields = [
    Buffer.from(header.backend, 'utf8'),
    Buffer.from(header.keyVersion, 'utf8'),
    Buffer.from(header.mechanism, 'utf8'),
  ];
  if (header.binding === undefined) return writeFields(ENVELOPE_MAGIC, fields);
  return writeFields(BOUND_ENVELOPE_MAGIC, [...fields, header.binding.envelopeId, header.binding.commitment]);
}

/** The envelope of a wrap made under `aad` (whose magic names the format). */
export function encodeEnvelope(aad: Buffer, wrapped: Buffer): Buffer {
  return writeFields(aad.subarray(0, MAGIC_BYTES), [aad.subarray(MAGIC_BYTES), wrapped]);
}

export function decodeEnvelope(ciphertext: Buffer): ParsedEnvelope {
  // The EncryptResponse ciphertext itself is held to the apiserver's 1 KiB by the gRPC
  // adapter; a wrap in an annotation or a v1 wrap set may be larger (an escrow wrap is).
  if (ciphertext.length > MAX_WRAP_BYTES) throw malformed(`a wrap exceeds ${MAX_WRAP_BYTES} bytes`);
  const magic = ciphertext.subarray(0, MAGIC_BYTES);
  const bound = magic.equals(BOUND_ENVELOPE_MAGIC);
  if (ciphertext.length <= MAGIC_BYTES || !(bound || magic.equals(ENVELOPE_MAGIC)))
    throw malformed('ciphertext was not produced by kms-broker (unknown format)');
  return decodeCanonical(ciphertext, bound) ?? decodeFully(ciphertext, bound);
}

/** The canonical envelope with a valid header, decoded without protobufjs or copies. */
function decodeCanonical(ciphertext: Buffer, bound: boolean): ParsedEnvelope | undefined {
  const [headerBytes, wrapped] = readCanonicalFields(ciphertext, MAGIC_BYTES, 2) ?? [];
  if (headerBytes === undefined || wrapped === undefined) return undefined;
  const fields = readCanonicalFields(headerBytes, 0, bound ? 5 : 3);
  if (fields === undefined) return undefined;
  const [backendBytes, versionBytes, mechanismBytes, envelopeId, commitmentBytes] = fields;
  const strings = [backendBytes, versionBytes, mechanismBytes].map(field => field?.toString('utf8') ?? '');
  // Invalid UTF-8 would decode to replacement characters: not the bytes that were signed.
  if (strings.some((value, index) => Buffer.byteLength(value) !== fields[index]?.length)) return undefined;
  const [backend = '', keyVersion = '', mechanism = ''] = strings;
  const header: WrapHeader = {
    backend,
    keyVersion,
    mechanism,
    ...(envelopeId !== undefined &&
      commitmentBytes !== undefined && { binding: { envelopeId, commitment: commitmentBytes } }),
  };
  if (problemWith(header, bound) !== undefined) return undefined;
  return { header, aad: aadOf(ciphertext, headerBytes), wrapped };
}

/** Not the canonical form of a valid header: decode it fully, to say what is wrong. */
function decodeFully(ciphertext: Buffer, bound: boolean): ParsedEnvelope {
  let headerBytes: Buffer;
  let wrapped: Buffer;
  let fields: {
    backend?: string;
    key_version?: string;
    mechanism?: string;
    envelope_id?: Buffer;
    seed_commitment?: Buffer;
  };
  try {
    const envelope = EnvelopeType.toObject(EnvelopeType.decode(ciphertext.subarray(MAGIC_BYTES)), {
      bytes: Buffer,
    }) as { header?: Buffer; wrapped?: Buffer };
    headerBytes = Buffer.from(envelope.header ?? Buffer.alloc(0));
    wrapped = Buffer.from(envelope.wrapped ?? Buffer.alloc(0));
    fields = WrapHeaderType.toObject(WrapHeaderType.decode(headerBytes), { bytes: Buffer });
  } catch {
    throw malformed('ciphertext envelope is malformed');
  }
  const envelopeId = fields.envelope_id === undefined ? undefined : Buffer.from(fields.envelope_id);
  const commitmentBytes =
    fields.seed_commitment === undefined ? undefined : Buffer.from(fields.seed_commitment);
  const header: WrapHeader = {
    backend: fields.backend ?? '',
    keyVersion: fields.key_version ?? '',
    mechanism: fields.mechanism ?? '',
    ...((envelopeId !== undefined || commitmentBytes !== undefined) && {
      binding: { envelopeId: envelopeId ?? Buffer.alloc(0), commitment: commitmentBytes ?? Buffer.alloc(0) },
    }),
  };
  const problem = problemWith(header, bound);
  if (problem !== undefined) throw malformed(problem);
  if (wrapped.length === 0) throw malformed('envelope carries no wrapped key');
  const parsed = { header, aad: aadOf(ciphertext, headerBytes), wrapped };
  // Protobuf decoding tolerates unknown and repeated fields; only the canonical encoding is
  // accepted, so every envelope has exactly one byte form.
  if (!headerAad(header).equals(parsed.aad) || !encodeEnvelope(parsed.aad, wrapped).equals(ciphertext)) {
    throw malformed('ciphertext envelope is not in canonical form');
  }
  return parsed;
}

/** What is wrong with a decoded header for its format, if anything. */
function problemWith(header: WrapHeader, bound: boolean): string | undefined {
  if (!backendNamePattern.test(header.backend)) return 'envelope header has an invalid backend name';
  if (header.keyVersion === '' || header.keyVersion.length > MAX_KEY_VERSION_LENGTH)
    return 'envelope header has an invalid key version';
  if (header.mechanism === '' || header.mechanism.length > MAX_MECHANISM_LENGTH)
    return 'envelope header has an invalid mechanism';
  if (!bound)
    return header.binding === undefined ? undefined : 'envelope header carries fields of another format';
  if (
    header.binding?.envelopeId.length !== ENVELOPE_ID_BYTES ||
    header.binding.commitment.length !== COMMITMENT_BYTES
  )
    return 'envelope header lacks a valid envelope id or seed commitment';
  return undefined;
}

function aadOf(ciphertext: Buffer, headerBytes: Buffer): Buffer {
  return Buffer.concat([ciphertext.subarray(0, MAGIC_BYTES), headerBytes]);
}

function malformed(message: string): BrokerError {
  return new BrokerError('INVALID_CIPHERTEXT', message);
}
