// The apiserver's KMS v2 limits, enforced on requests (INVALID_REQUEST) and on our own
// responses (INTERNAL: a response the apiserver would reject is our bug).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  checkAnnotations,
  checkCiphertext,
  checkEncryptResponse,
  checkKeyId,
  checkPlaintext,
  checkUid,
  isFullyQualifiedDomainName,
  MAX_ANNOTATION_COUNT,
  MAX_PLAINTEXT_BYTES,
  MAX_UID_LENGTH,
} from '../../src/grpc/limits.ts';
import { MAX_ANNOTATIONS_BYTES, MAX_CIPHERTEXT_BYTES, MAX_KEY_ID_BYTES } from '../../src/kms-limits.ts';
import { brokerError } from './expect-error.ts';

describe('limits', () => {
  describe('isFullyQualifiedDomainName (apimachinery semantics)', () => {
    const label63 = 'a'.repeat(63);
    const longest = `${label63}.${label63}.${label63}.${'a'.repeat(61)}`;
    const tooLong = `${longest}a`;
    const valid = [
      'a.b',
      'kms-broker.example.com',
      'a.b.',
      '0.1',
      'x-1.y-2',
      `${label63}.b`,
      longest,
      `${longest}.`,
    ];
    const invalid = [
      'panda',
      'A.b',
      'a.B',
      '-a.b',
      'a-.b',
      'a.-b',
      `${'a'.repeat(64)}.b`,
      tooLong,
      '',
      '.',
      'a..b',
      '.a.b',
      'a.b..',
      'a_b.c',
      'a.b/c',
      'ä.b',
    ];
    it('has a 253-character valid case and a 254-character invalid one', () => {
      assert.deepEqual([longest.length, tooLong.length], [253, 254]);
    });
    for (const name of valid) {
      it(`accepts '${name.length > 40 ? `${name.slice(0, 12)}… (${name.length} chars)` : name}'`, () => {
        assert.equal(isFullyQualifiedDomainName(name), true);
      });
    }
    for (const name of invalid) {
      it(`rejects '${name.length > 40 ? `${name.slice(0, 12)}… (${name.length} chars)` : name}'`, () => {
        assert.equal(isFullyQualifiedDomainName(name), false);
      });
    }
  });

  describe('request checks: the exact limit passes, one more fails with INVALID_REQUEST', () => {
    const boundaries: {
      name: string;
      check: (size: number) => void;
      limit: number;
      min: number;
    }[] = [
      {
        name: 'plaintext bytes',
        check: n => checkPlaintext(Buffer.alloc(n, 1)),
        limit: MAX_PLAINTEXT_BYTES,
        min: 1,
      },
      {
        name: 'ciphertext bytes',
        check: n => checkCiphertext(Buffer.alloc(n, 1)),
        limit: MAX_CIPHERTEXT_BYTES,
        min: 1,
      },
      { name: 'key_id characters', check: n => checkKeyId('k'.repeat(n)), limit: MAX_KEY_ID_BYTES, min: 1 },
      { name: 'uid characters', check: n => checkUid('u'.repeat(n)), limit: MAX_UID_LENGTH, min: 0 },
    ];
    for (const { name, check, limit, min } of boundaries) {
      it(`${name}: ${min} and ${limit} pass, ${limit + 1} fails${min > 0 ? ', empty fails' : ''}`, () => {
        check(min);
        check(limit);
        assert.throws(() => check(limit + 1), brokerError('INVALID_REQUEST'));
        if (min > 0) assert.throws(() => check(0), brokerError('INVALID_REQUEST', 'empty'));
      });
    }

    it('pins the limits to the apiserver’s values', () => {
      assert.deepEqual(
        [
          MAX_PLAINTEXT_BYTES,
          MAX_CIPHERTEXT_BYTES,
          MAX_KEY_ID_BYTES,
          MAX_ANNOTATIONS_BYTES,
          MAX_ANNOTATION_COUNT,
        ],
        [128, 1024, 1024, 32 * 1024, 32],
      );
    });

    it('counts key_id length in UTF-8 bytes, not characters', () => {
      checkKeyId('é'.repeat(MAX_KEY_ID_BYTES / 2));
      assert.throws(() => checkKeyId('é'.repeat(MAX_KEY_ID_BYTES / 2 + 1)), brokerError('INVALID_REQUEST'));
    });
  });

  describe('annotations', () => {
    const annotationsOf = (count: number) =>
      Object.fromEntries(Array.from({ length: count }, (_, i) => [`k${i}.example.com`, Buffer.from('v')]));

    it('accepts none', () => {
      checkAnnotations({});
    });

    it(`accepts ${MAX_ANNOTATION_COUNT} annotations and rejects ${MAX_ANNOTATION_COUNT + 1}`, () => {
      checkAnnotations(annotationsOf(MAX_ANNOTATION_COUNT));
      assert.throws(
        () => checkAnnotations(annotationsOf(MAX_ANNOTATION_COUNT + 1)),
        brokerError('INVALID_REQUEST', `more than ${MAX_ANNOTATION_COUNT} annotations`),
      );
    });

    it('counts the total as key bytes plus value bytes', () => {
      // 'a.b' (3) + 32765 = 32768 exactly; one more key byte tips it over.
      checkAnnotations({ 'a.b': Buffer.alloc(MAX_ANNOTATIONS_BYTES - 3) });
      assert.throws(
        () => checkAnnotations({ 'ab.c': Buffer.alloc(MAX_ANNOTATIONS_BYTES - 3) }),
        brokerError('INVALID_REQUEST', `annotations total ${MAX_ANNOTATIONS_BYTES + 1} bytes`),
      );
    });

    it('sums over all annotations', () => {
      const half = MAX_ANNOTATIONS_BYTES / 2;
      checkAnnotations({ 'a.b': Buffer.alloc(half - 3), 'c.d': Buffer.alloc(half - 3) });
      assert.throws(
        () => checkAnnotations({ 'a.b': Buffer.alloc(half - 3), 'c.d': Buffer.alloc(half - 2) }),
        brokerError('INVALID_REQUEST', 'annotations total'),
      );
    });

    it('rejects a key that is not a lowercase fully qualified domain name', () => {
      for (const key of ['panda', 'Kms.Example.com', 'a..b']) {
        assert.throws(
          () => checkAnnotations({ [key]: Buffer.from('v') }),
          brokerError('INVALID_REQUEST', 'not a lowercase fully qualified domain name'),
        );
      }
    });
  });

  describe('checkEncryptResponse', () => {
    const response = { ciphertext: Buffer.alloc(100, 1), keyId: 'kbr1-x', annotations: {} };

    it('accepts a response within every limit', () => {
      checkEncryptResponse(response);
    });

    const violations: { name: string; change: Partial<typeof response>; reason: string }[] = [
      { name: 'an empty ciphertext', change: { ciphertext: Buffer.alloc(0) }, reason: 'ciphertext is empty' },
      {
        name: 'an oversized ciphertext',
        change: { ciphertext: Buffer.alloc(MAX_CIPHERTEXT_BYTES + 1) },
        reason: `ciphertext is ${MAX_CIPHERTEXT_BYTES + 1} bytes`,
      },
      { name: 'an empty key_id', change: { keyId: '' }, reason: 'key_id is empty' },
      {
        name: 'an invalid annotation key',
        change: { annotations: { Bad: Buffer.from('x') } },
        reason: 'an annotation key is not a lowercase fully qualified domain name',
      },
    ];
    for (const { name, change, reason } of violations) {
      it(`turns ${name} into INTERNAL, keeping the reason`, () => {
        assert.throws(
          () => checkEncryptResponse({ ...response, ...change }),
          brokerError('INTERNAL', `refusing to return a response the apiserver would reject: ${reason}`),
        );
      });
    }
  });
});
