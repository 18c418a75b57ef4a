// What tests read from a broker envelope: its header's backend, key version and mechanism,
// after checking that the envelope is of the bound format every Encrypt writes now.
import assert from 'node:assert/strict';
import { decodeEnvelope, type WrapHeader } from '../../src/broker/envelope.ts';

export function headerOf(ciphertext: Buffer): Omit<WrapHeader, 'binding'> {
  const { binding, ...header } = decodeEnvelope(ciphertext).header;
  assert.ok(binding !== undefined, 'the envelope is bound (envelope id and seed commitment)');
  return header;
}
