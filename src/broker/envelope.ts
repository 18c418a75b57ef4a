// The versioned, self-describing envelope (proto/envelope.proto) that the broker returns
// as ciphertext: magic "kbr\x01" || Envelope{header, wrapped}. Parsing is bounded and total:
// anything that is not exactly our format, in its one canonical encoding, becomes
// INVALID_CIPHERTEXT.
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';
import { backendNameSchema } from '../backends/config-schema.ts';
import { BrokerError } from '../errors.ts';
import { MAX_CIPHERTEXT_BYTES } from '../kms-limits.ts';

/** Wraps beyond the first travel in annotations `<backend><suffix>` (lowercase FQDNs). */
export const WRAP_ANNOTATION_SUFFIX = '.wrap.kms-broker.io';
export const ENVELOPE_MAGIC = Buffer.from('kbr\x01', 'latin1');
const MAX_KEY_VERSION_LENGTH = 128;
const MAX_MECHANISM_LENGTH = 32;
const backendNamePattern = new RegExp(backendNameSchema.pattern as string);

// keepCase: field names as in the .proto (key_version), not camel-cased.
const root = new protobuf.Root().loadSync(
  fileURLToPath(new URL('../../proto/envelope.proto', import.meta.url)),
  {
    keepCase: true,
  },
);
const WrapHeaderType = root.lookupType('kmsbroker.envelope.v1.WrapHeader');
const EnvelopeType = root.lookupType('kmsbroker.envelope.v1.Envelope');

export interface WrapHeader {
  readonly backend: string;
  readonly keyVersion: string;
  readonly mechanism: string;
}

export interface ParsedEnvelope {
  readonly header: WrapHeader;
  /** The authenticated bytes: magic || serialized header. */
  readonly aad: Buffer;
  readonly wrapped: Buffer;
}

/** Serializes a header and returns the AAD that a wrap under it must bind. */
export function headerAad(header: WrapHeader): Buffer {
  return writeFields(ENVELOPE_MAGIC, [
    Buffer.from(header.backend, 'utf8'),
    Buffer.from(header.keyVersion, 'utf8'),
    Buffer.from(header.mechanism, 'utf8'),
  ]);
}

export function encodeEnvelope(aad: Buffer, wrapped: Buffer): Buffer {
  return writeFields(ENVELOPE_MAGIC, [aad.subarray(ENVELOPE_MAGIC.length), wrapped]);
}

/**
 * `prefix` || protobuf fields 1, 2, ... as length-delimited values (wire type 2), empty ones
 * left out: the bytes protobufjs writes for these messages, in one allocation (Encrypt
 * builds the AAD and the envelope for every wrap).
 */
function writeFields(prefix: Buffer, values: readonly Buffer[]): Buffer {
  let size = prefix.length;
  for (const value of values) if (value.length > 0) size += 1 + varintSize(value.length) + value.length;
  const out = Buffer.allocUnsafe(size);
  let offset = prefix.copy(out, 0);
  values.forEach((value, index) => {
    if (value.length === 0) return;
    out[offset++] = ((index + 1) << 3) | 2;
    for (let rest = value.length; ; rest >>>= 7) {
      if (rest < 0x80) {
        out[offset++] = rest;
        break;
      }
      out[offset++] = (rest & 0x7f) | 0x80;
    }
    offset += value.copy(out, offset);
  });
  return out;
}

function varintSize(value: number): number {
  let size = 1;
  for (let rest = value >>> 7; rest > 0; rest >>>= 7) size++;
  return size;
}

/**
 * Reads the canonical form only: fields 1..count in order, each present and non-empty,
 * minimal varint lengths, nothing after. Values are views into `bytes` (no copies).
 * Anything else returns undefined, and the caller falls back to the full decoder, which
 * names what is wrong.
 */
function readCanonicalFields(bytes: Buffer, start: number, count: number): Buffer[] | undefined {
  const values: Buffer[] = [];
  let offset = start;
  for (let number = 1; number <= count; number++) {
    if (bytes[offset++] !== ((number << 3) | 2)) return undefined;
    let length = 0;
    for (let shift = 0; ; shift += 7) {
      const byte = bytes[offset++];
      if (byte === undefined || shift > 21) return undefined;
      length += (byte & 0x7f) * 2 ** shift;
      if (byte < 0x80) {
        if (byte === 0 && shift > 0) return undefined; // a non-minimal varint
        break;
      }
    }
    if (length === 0 || offset + length > bytes.length) return undefined;
    values.push(bytes.subarray(offset, offset + length));
    offset += length;
  }
  return offset === bytes.length ? values : undefined;
}

/** The canonical envelope with a valid header, decoded without protobufjs or copies. */
function decodeCanonical(ciphertext: Buffer): ParsedEnvelope | undefined {
  const [headerBytes, wrapped] = readCanonicalFields(ciphertext, ENVELOPE_MAGIC.length, 2) ?? [];
  if (headerBytes === undefined || wrapped === undefined) return undefined;
  const fields = readCanonicalFields(headerBytes, 0, 3);
  if (fields === undefined) return undefined;
  const strings = fields.map(field => field.toString('utf8'));
  // Invalid UTF-8 would decode to replacement characters: not the bytes that were signed.
  if (strings.some((value, index) => Buffer.byteLength(value) !== fields[index]?.length)) return undefined;
  const [backend = '', keyVersion = '', mechanism = ''] = strings;
  if (
    !backendNamePattern.test(backend) ||
    keyVersion.length > MAX_KEY_VERSION_LENGTH ||
    mechanism.length > MAX_MECHANISM_LENGTH
  )
    return undefined;
  return {
    header: { backend, keyVersion, mechanism },
    aad: Buffer.concat([ENVELOPE_MAGIC, headerBytes]),
    wrapped,
  };
}

function isEnvelope(ciphertext: Buffer): boolean {
  return (
    ciphertext.length > ENVELOPE_MAGIC.length &&
    ciphertext.subarray(0, ENVELOPE_MAGIC.length).equals(ENVELOPE_MAGIC)
  );
}

export function decodeEnvelope(ciphertext: Buffer): ParsedEnvelope {
  if (ciphertext.length > MAX_CIPHERTEXT_BYTES)
    throw malformed(`ciphertext exceeds ${MAX_CIPHERTEXT_BYTES} bytes`);
  if (!isEnvelope(ciphertext)) throw malformed('ciphertext was not produced by kms-broker (unknown format)');
  const canonical = decodeCanonical(ciphertext);
  if (canonical !== undefined) return canonical;
  // Not the canonical form of a valid header: decode it fully, to say what is wrong.
  const body = ciphertext.subarray(ENVELOPE_MAGIC.length);
  let headerBytes: Buffer;
  let wrapped: Buffer;
  let header: { backend?: string; key_version?: string; mechanism?: string };
  try {
    const envelope = EnvelopeType.toObject(EnvelopeType.decode(body), { bytes: Buffer }) as {
      header?: Buffer;
      wrapped?: Buffer;
    };
    headerBytes = Buffer.from(envelope.header ?? Buffer.alloc(0));
    wrapped = Buffer.from(envelope.wrapped ?? Buffer.alloc(0));
    header = WrapHeaderType.toObject(WrapHeaderType.decode(headerBytes));
  } catch {
    throw malformed('ciphertext envelope is malformed');
  }
  const backend = header.backend ?? '';
  const keyVersion = header.key_version ?? '';
  const mechanism = header.mechanism ?? '';
  if (!backendNamePattern.test(backend)) throw malformed('envelope header has an invalid backend name');
  if (keyVersion === '' || keyVersion.length > MAX_KEY_VERSION_LENGTH)
    throw malformed('envelope header has an invalid key version');
  if (mechanism === '' || mechanism.length > MAX_MECHANISM_LENGTH)
    throw malformed('envelope header has an invalid mechanism');
  if (wrapped.length === 0) throw malformed('envelope carries no wrapped key');
  const parsed = {
    header: { backend, keyVersion, mechanism },
    aad: Buffer.concat([ENVELOPE_MAGIC, headerBytes]),
    wrapped,
  };
  // Protobuf decoding tolerates unknown and repeated fields; only the canonical encoding is
  // accepted, so every envelope has exactly one byte form.
  if (
    !headerAad(parsed.header).equals(parsed.aad) ||
    !encodeEnvelope(parsed.aad, wrapped).equals(ciphertext)
  ) {
    throw malformed('ciphertext envelope is not in canonical form');
  }
  return parsed;
}

function malformed(message: string): BrokerError {
  return new BrokerError('INVALID_CIPHERTEXT', message);
}
