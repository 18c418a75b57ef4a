// The protobuf wire form of the envelope's messages, written and read by hand for the one
// shape they have: length-delimited fields 1..n in order. Encrypt builds the AAD and the
// envelope for every wrap, and Decrypt reads one per wrap, so neither goes through
// protobufjs on the hot path; the full decoder in envelope.ts handles everything else.

/**
 * `prefix` || protobuf fields 1, 2, ... as length-delimited values (wire type 2), empty ones
 * left out: the bytes protobufjs writes for these messages, in one allocation.
 */
export function writeFields(prefix: Buffer, values: readonly Buffer[]): Buffer {
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
export function readCanonicalFields(bytes: Buffer, start: number, count: number): Buffer[] | undefined {
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
