// The KMS v1 ciphertext: KMS v1 has no key_id and no annotations, so one blob carries every
// wrap of the DEK (magic "kbr\x02" || WrapSet{wraps}), each an encoded broker envelope. Like
// the envelope, it is parsed bounded, total and canonical: anything else is INVALID_CIPHERTEXT.
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';
import { BrokerError } from '../errors.ts';
import { MAX_WRAP_BYTES } from '../kms-limits.ts';

const root = new protobuf.Root().loadSync(
  fileURLToPath(new URL('../../proto/envelope.proto', import.meta.url)),
  { keepCase: true },
);

export const WRAP_SET_MAGIC = Buffer.from('kbr\x02', 'latin1');
const WrapSetType = root.lookupType('kmsbroker.envelope.v1.WrapSet');
const MAX_WRAPS = 16;

export function encodeWrapSet(envelopes: readonly Buffer[]): Buffer {
  return Buffer.concat([
    WRAP_SET_MAGIC,
    WrapSetType.encode(WrapSetType.fromObject({ wraps: envelopes })).finish(),
  ]);
}

/** The envelopes of a v1 ciphertext, each still to be decoded with decodeEnvelope. */
export function decodeWrapSet(cipher: Buffer): Buffer[] {
  if (cipher.length > MAX_WRAPS * (MAX_WRAP_BYTES + 8) + WRAP_SET_MAGIC.length)
    throw malformed('ciphertext is too large');
  if (
    cipher.length <= WRAP_SET_MAGIC.length ||
    !cipher.subarray(0, WRAP_SET_MAGIC.length).equals(WRAP_SET_MAGIC)
  ) {
    throw malformed('ciphertext was not produced by kms-broker (unknown format)');
  }
  let wraps: Buffer[];
  try {
    const decoded = WrapSetType.toObject(WrapSetType.decode(cipher.subarray(WRAP_SET_MAGIC.length)), {
      bytes: Buffer,
    }) as { wraps?: Buffer[] };
    wraps = (decoded.wraps ?? []).map(wrap => Buffer.from(wrap));
  } catch {
    throw malformed('ciphertext wrap set is malformed');
  }
  if (wraps.length === 0 || wraps.length > MAX_WRAPS)
    throw malformed('ciphertext carries no wraps, or too many');
  if (!encodeWrapSet(wraps).equals(cipher)) throw malformed('ciphertext wrap set is not in canonical form');
  return wraps;
}

function malformed(message: string): BrokerError {
  return new BrokerError('INVALID_CIPHERTEXT', message);
}
