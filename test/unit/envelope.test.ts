// The ciphertext envelope: magic "kbr\x01" || Envelope{header, wrapped}. Encoding must be
// exactly the documented protobuf layout, and decoding must be total: every input either
// parses or is rejected as INVALID_CIPHERTEXT.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  bindingFor,
  BOUND_ENVELOPE_MAGIC,
  checkWrapsBelongTogether,
  commitsTo,
  decodeEnvelope,
  encodeEnvelope,
  ENVELOPE_MAGIC,
  headerAad,
  type WrapHeader,
} from '../../src/broker/envelope.ts';
import { MAX_WRAP_BYTES } from '../../src/kms-limits.ts';
import { BrokerError } from '../../src/errors.ts';
import { brokerError } from './expect-error.ts';

const header: WrapHeader = { backend: 'hsm-1', keyVersion: '7', mechanism: 'aes-gcm' };
const wrapped = Buffer.from('0123456789abcdef0123456789abcdef0123456789abcdef0123456789', 'latin1');

/** A length-delimited protobuf field (wire type 2), written by hand. */
function field(number: number, value: Buffer | string): Buffer {
  const bytes = typeof value === 'string' ? Buffer.from(value, 'utf8') : value;
  const length: number[] = [];
  for (let rest = bytes.length; ; rest >>>= 7) {
    if (rest < 0x80) {
      length.push(rest);
      break;
    }
    length.push((rest & 0x7f) | 0x80);
  }
  return Buffer.concat([Buffer.from([(number << 3) | 2, ...length]), bytes]);
}

function envelopeOf(h: WrapHeader, w: Buffer = wrapped): Buffer {
  return encodeEnvelope(headerAad(h), w);
}

/** A small deterministic PRNG (mulberry32), so a failing fuzz input can be reproduced. */
function prng(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('envelope', () => {
  describe('the bound format (kbr\\x03)', () => {
    const seed = Buffer.alloc(32, 7);
    const binding = bindingFor(seed);
    const bound: WrapHeader = { ...header, binding };

    it('adds the envelope id and the seed commitment as header fields 4 and 5, under its own magic', () => {
      const expected = Buffer.concat([
        BOUND_ENVELOPE_MAGIC,
        field(1, 'hsm-1'),
        field(2, '7'),
        field(3, 'aes-gcm'),
        field(4, binding.envelopeId),
        field(5, binding.commitment),
      ]);
      assert.deepEqual(headerAad(bound), expected);
      assert.equal(binding.envelopeId.length, 16);
      assert.equal(binding.commitment.length, 32);
    });

    it('round-trips, and a fresh binding is made for every seed', () => {
      const decoded = decodeEnvelope(envelopeOf(bound));
      assert.deepEqual(decoded.header, bound);
      assert.notDeepEqual(bindingFor(seed).envelopeId, binding.envelopeId);
    });

    it('commits to its seed and to no other', () => {
      assert.equal(commitsTo(bound, seed), true);
      assert.equal(commitsTo(bound, Buffer.alloc(32, 8)), false);
      assert.equal(commitsTo(header, Buffer.alloc(32, 8)), true, 'the first format commits to nothing');
    });

    it('takes wraps of one envelope together, and refuses a mix of envelopes or formats', () => {
      const sibling = decodeEnvelope(envelopeOf({ ...bound, backend: 'vault' }));
      const own = decodeEnvelope(envelopeOf(bound));
      checkWrapsBelongTogether([own, sibling]);
      const stranger = decodeEnvelope(envelopeOf({ ...bound, backend: 'vault', binding: bindingFor(seed) }));
      assert.throws(
        () => checkWrapsBelongTogether([own, stranger]),
        brokerError('INVALID_CIPHERTEXT', "'vault'"),
      );
      const legacy = decodeEnvelope(envelopeOf({ ...header, backend: 'vault' }));
      assert.throws(() => checkWrapsBelongTogether([legacy, own]), brokerError('INVALID_CIPHERTEXT'));
      checkWrapsBelongTogether([legacy, decodeEnvelope(envelopeOf(header))]);
    });

    it('refuses a bound header without its fields, with fields of the wrong size, or a first-format one with them', () => {
      const cases = [
        Buffer.concat([BOUND_ENVELOPE_MAGIC, field(1, headerAad(header).subarray(4)), field(2, wrapped)]),
        encodeEnvelope(
          headerAad({ ...header, binding: { ...binding, envelopeId: Buffer.alloc(15) } }),
          wrapped,
        ),
        encodeEnvelope(
          headerAad({ ...header, binding: { ...binding, commitment: Buffer.alloc(31) } }),
          wrapped,
        ),
        Buffer.concat([ENVELOPE_MAGIC, field(1, headerAad(bound).subarray(4)), field(2, wrapped)]),
      ];
      for (const input of cases)
        assert.throws(() => decodeEnvelope(input), brokerError('INVALID_CIPHERTEXT'));
    });
  });

  describe('encoding', () => {
    it('makes the AAD exactly magic || serialized WrapHeader', () => {
      const expected = Buffer.concat([
        Buffer.from('kbr\x01', 'latin1'),
        field(1, 'hsm-1'),
        field(2, '7'),
        field(3, 'aes-gcm'),
      ]);
      assert.deepEqual(headerAad(header), expected);
    });

    it('writes magic || Envelope{header: the AAD without magic, wrapped}', () => {
      const aad = headerAad(header);
      const expected = Buffer.concat([
        ENVELOPE_MAGIC,
        field(1, aad.subarray(ENVELOPE_MAGIC.length)),
        field(2, wrapped),
      ]);
      assert.deepEqual(encodeEnvelope(aad, wrapped), expected);
    });

    it('round-trips: decoding gives back the same header, AAD and wrapped bytes', () => {
      const aad = headerAad(header);
      const decoded = decodeEnvelope(encodeEnvelope(aad, wrapped));
      assert.deepEqual(decoded.header, header);
      assert.deepEqual(decoded.aad, aad);
      assert.deepEqual(decoded.wrapped, wrapped);
    });

    it('round-trips the longest accepted key version (128 characters) and non-ASCII versions', () => {
      for (const keyVersion of ['v'.repeat(128), 'versión-2']) {
        const decoded = decodeEnvelope(envelopeOf({ ...header, keyVersion }));
        assert.equal(decoded.header.keyVersion, keyVersion);
      }
    });

    it('accepts only the canonical field order, so the authenticated bytes are unique', () => {
      // Same fields, unusual order: decodable, but a second byte form of the same header.
      const reordered = Buffer.concat([field(3, 'aes-gcm'), field(1, 'hsm-1'), field(2, '7')]);
      const ciphertext = Buffer.concat([ENVELOPE_MAGIC, field(1, reordered), field(2, wrapped)]);
      assert.throws(
        () => decodeEnvelope(ciphertext),
        brokerError('INVALID_CIPHERTEXT', 'not in canonical form'),
      );
      assert.deepEqual(decodeEnvelope(envelopeOf(header)).aad, headerAad(header));
    });

    it(`accepts a wrap of exactly ${MAX_WRAP_BYTES} bytes`, () => {
      let ciphertext: Buffer | undefined;
      for (let size = MAX_WRAP_BYTES - 124; size <= MAX_WRAP_BYTES && ciphertext === undefined; size++) {
        const candidate = envelopeOf(header, Buffer.alloc(size, 1));
        if (candidate.length === MAX_WRAP_BYTES) ciphertext = candidate;
      }
      assert.ok(ciphertext !== undefined, 'no wrapped size gives an envelope of the largest size');
      assert.equal(decodeEnvelope(ciphertext).header.backend, header.backend);
    });
  });

  describe('rejects as INVALID_CIPHERTEXT', () => {
    const valid = envelopeOf(header);
    const cases: { name: string; input: Buffer; message: string }[] = [
      { name: 'an empty ciphertext', input: Buffer.alloc(0), message: 'unknown format' },
      { name: 'the magic alone', input: Buffer.from(ENVELOPE_MAGIC), message: 'unknown format' },
      {
        name: 'a wrong magic (version byte 2)',
        input: Buffer.concat([Buffer.from('kbr\x02', 'latin1'), valid.subarray(4)]),
        message: 'unknown format',
      },
      {
        name: 'another plugin’s ciphertext (no magic)',
        input: Buffer.from('k8s:enc:kms:v2:other:payload'),
        message: 'unknown format',
      },
      { name: 'a truncated body', input: valid.subarray(0, valid.length - 5), message: 'malformed' },
      {
        name: 'a valid envelope with an unknown field appended',
        input: Buffer.concat([valid, field(15, 'abc')]),
        message: 'not in canonical form',
      },
      {
        name: 'a valid envelope with a second wrapped key before the real one',
        input: Buffer.concat([
          ENVELOPE_MAGIC,
          field(2, Buffer.from([1, 2])),
          valid.subarray(ENVELOPE_MAGIC.length),
        ]),
        message: 'not in canonical form',
      },
      {
        name: 'a header with an unknown field',
        input: encodeEnvelope(Buffer.concat([headerAad(header), field(9, 'x')]), wrapped),
        message: 'not in canonical form',
      },

      {
        name: 'garbage after the magic',
        input: Buffer.concat([ENVELOPE_MAGIC, Buffer.from('ffffffffffffffffffff0a', 'hex')]),
        message: 'malformed',
      },
      {
        name: `more than ${MAX_WRAP_BYTES} bytes, even if well formed`,
        input: envelopeOf(header, Buffer.alloc(MAX_WRAP_BYTES, 1)),
        message: `exceeds ${MAX_WRAP_BYTES} bytes`,
      },
      {
        name: 'an uppercase backend name',
        input: envelopeOf({ ...header, backend: 'HSM' }),
        message: 'invalid backend name',
      },
      {
        name: 'a backend name longer than a DNS label (64 characters)',
        input: envelopeOf({ ...header, backend: 'a'.repeat(64) }),
        message: 'invalid backend name',
      },
      {
        name: 'an empty backend name',
        input: envelopeOf({ ...header, backend: '' }),
        message: 'invalid backend name',
      },
      {
        name: 'an empty key version',
        input: envelopeOf({ ...header, keyVersion: '' }),
        message: 'invalid key version',
      },
      {
        name: 'a key version of 129 characters',
        input: envelopeOf({ ...header, keyVersion: 'v'.repeat(129) }),
        message: 'invalid key version',
      },
      {
        name: 'an empty mechanism',
        input: envelopeOf({ ...header, mechanism: '' }),
        message: 'invalid mechanism',
      },
      {
        name: 'a mechanism of 33 characters',
        input: envelopeOf({ ...header, mechanism: 'm'.repeat(33) }),
        message: 'invalid mechanism',
      },
      {
        name: 'an empty wrapped key',
        input: envelopeOf(header, Buffer.alloc(0)),
        message: 'no wrapped key',
      },
      {
        name: 'an envelope without a header',
        input: Buffer.concat([ENVELOPE_MAGIC, field(2, wrapped)]),
        message: 'invalid backend name',
      },
    ];
    for (const { name, input, message } of cases) {
      it(name, () => {
        assert.throws(() => decodeEnvelope(input), brokerError('INVALID_CIPHERTEXT', message));
      });
    }
  });

  it('never fails with anything but INVALID_CIPHERTEXT on 2,000 random and mutated inputs', () => {
    const random = prng(0x6b6272);
    const int = (below: number) => Math.floor(random() * below);
    const bytes = (length: number) => Buffer.from(Array.from({ length }, () => int(256)));
    const valid = envelopeOf(header);
    const mutations: ((input: Buffer) => Buffer)[] = [
      input => {
        const copy = Buffer.from(input);
        for (let flips = 1 + int(4); flips > 0; flips--) copy[int(copy.length)] = int(256);
        return copy;
      },
      input => input.subarray(0, int(input.length)),
      input => {
        const at = int(input.length);
        return Buffer.concat([input.subarray(0, at), bytes(1 + int(8)), input.subarray(at)]);
      },
      () => Buffer.concat([ENVELOPE_MAGIC, bytes(int(200))]),
      () => bytes(int(1100)),
    ];
    let parsed = 0;
    for (let iteration = 0; iteration < 2000; iteration++) {
      const mutate = mutations[iteration % mutations.length] as (input: Buffer) => Buffer;
      const input = mutate(valid);
      try {
        const envelope = decodeEnvelope(input);
        parsed++;
        assert.ok(envelope.wrapped.length > 0 && envelope.aad.subarray(0, 4).equals(ENVELOPE_MAGIC));
      } catch (error) {
        assert.ok(
          error instanceof BrokerError && error.code === 'INVALID_CIPHERTEXT',
          `input ${input.toString('hex')} (iteration ${iteration}) threw ${String(error)}`,
        );
      }
    }
    // Single-byte flips in the wrapped bytes still parse; the loop must have exercised both paths.
    assert.ok(parsed > 0 && parsed < 2000, `parsed ${parsed} of 2000`);
  });
});
