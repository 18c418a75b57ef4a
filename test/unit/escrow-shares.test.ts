// The escrow shares: any M of N rebuild the key (checked against the public key), M−1 do not,
// a mistyped share is caught and named, and shares of another key pair or the same share twice
// are refused.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { openFromEscrow, sealToEscrow } from '../../src/escrow/hybrid-wrap.ts';
import { generateEscrowKeyPair } from '../../src/escrow/key-files.ts';
import { formatShare, parseShare } from '../../src/escrow/share-format.ts';
import { combineShares, splitPrivateKey, type SourcedShare } from '../../src/escrow/shares.ts';
import { brokerError } from './expect-error.ts';

const { publicKey, privateKey } = generateEscrowKeyPair();
const lines = (await splitPrivateKey(privateKey, 5, 3)).map(formatShare);
const sourced = (indexes: readonly number[], from = lines): SourcedShare[] =>
  indexes.map(index => ({
    source: `share-${index + 1}`,
    share: parseShare(from[index] as string, `share-${index + 1}`),
  }));

function combinations(size: number, of: number): number[][] {
  if (size === 0) return [[]];
  return Array.from({ length: of }, (_, last) =>
    combinations(size - 1, last).map(rest => [...rest, last]),
  ).flat();
}

/** One character of `line`'s share data changed to another base32 character. */
function mistype(line: string): string {
  const position = 25; // inside the first group of share data
  const replacement = line[position] === 'A' ? 'B' : 'A';
  return `${line.slice(0, position)}${replacement}${line.slice(position + 1)}`;
}

describe('escrow shares', () => {
  it('writes each share as one typeable line under 250 characters', () => {
    assert.equal(lines.length, 5);
    for (const [index, line] of lines.entries()) {
      assert.match(line, new RegExp(`^kbes1-${index + 1}of5-m3-[0-9a-f]{8}(-[A-Z2-7]{1,5})+-[A-Z2-7]{8}$`));
      assert.ok(line.length < 250, `${line.length} characters`);
    }
  });

  it('rebuilds the key from every one of the 10 sets of 3 out of 5, and from all 5', async () => {
    const sets = [...combinations(3, 5), [0, 1, 2, 3, 4]];
    assert.equal(sets.length, 11);
    const wrap = sealToEscrow(publicKey, Buffer.from('seed'), Buffer.from('aad'));
    for (const set of sets) {
      const rebuilt = await combineShares(sourced(set), publicKey, 'escrow-public.pem');
      assert.deepEqual(openFromEscrow(rebuilt, wrap, Buffer.from('aad')), Buffer.from('seed'), set.join(','));
    }
  });

  it('refuses 2 shares of a threshold-3 split, every pair', async () => {
    for (const set of combinations(2, 5))
      await assert.rejects(
        combineShares(sourced(set), publicKey, 'escrow-public.pem'),
        brokerError('ESCROW_SHARES_INVALID', '2 share(s) given, the key needs 3 of its 5'),
      );
  });

  it('names a share with one character mistyped, also in lower case and across lines', () => {
    assert.throws(
      () => parseShare(mistype(lines[1] as string), 'share-2-of-5.txt'),
      brokerError('ESCROW_SHARES_INVALID', 'share share-2-of-5.txt: its checksum does not match'),
    );
    const retyped = (lines[1] as string).toLowerCase().replace(/-([A-Z2-7a-z]{5})-/g, '-$1-\n'); // every other group on a new line
    assert.equal(parseShare(retyped, 'x').index, 2);
  });

  it('names a share with a character that is not base32, or a garbled header', () => {
    const line = lines[0] as string;
    const position = 25; // inside the first group of share data
    assert.throws(
      () => parseShare(`${line.slice(0, position)}1${line.slice(position + 1)}`, 'share-1-of-5.txt'),
      brokerError('ESCROW_SHARES_INVALID', "share share-1-of-5.txt: '1' is not a base32 character"),
    );
    assert.throws(
      () => parseShare(line.replace('-m3-', '-m-'), 'share-1-of-5.txt'),
      brokerError('ESCROW_SHARES_INVALID', 'share share-1-of-5.txt: its header'),
    );
    assert.throws(
      () => parseShare(line.replace('-1of5-', '-4of5-'), 'share-1-of-5.txt'),
      brokerError('ESCROW_SHARES_INVALID', 'share share-1-of-5.txt: its checksum'),
    );
    assert.throws(
      () => parseShare('hello', 'notes.txt'),
      brokerError('ESCROW_SHARES_INVALID', 'share notes.txt: is not'),
    );
  });

  it('refuses shares of another key pair, naming the share', async () => {
    const other = generateEscrowKeyPair();
    const otherLines = (await splitPrivateKey(other.privateKey, 5, 3)).map(formatShare);
    const mixed = [
      ...sourced([0, 1]),
      { source: 'other-3', share: parseShare(otherLines[2] as string, 'other-3') },
    ];
    await assert.rejects(
      combineShares(mixed, publicKey, 'escrow-public.pem'),
      brokerError('ESCROW_SHARES_INVALID', 'share other-3 belongs to escrow key'),
    );
    await assert.rejects(
      combineShares(sourced([0, 1, 2]), other.publicKey, 'other.pem'),
      brokerError('ESCROW_SHARES_INVALID', 'share share-1 belongs to escrow key'),
    );
  });

  it('refuses the same share twice, naming both', async () => {
    const twice = [
      ...sourced([0, 1]),
      { source: 'copy-of-1', share: parseShare(lines[0] as string, 'copy') },
    ];
    await assert.rejects(
      combineShares(twice, publicKey, 'escrow-public.pem'),
      brokerError('ESCROW_SHARES_INVALID', 'shares share-1 and copy-of-1 are both share 1'),
    );
  });

  it('refuses a split into fewer shares than its threshold, or a threshold of 1', async () => {
    await assert.rejects(splitPrivateKey(privateKey, 2, 3), brokerError('INVALID_REQUEST'));
    await assert.rejects(splitPrivateKey(privateKey, 3, 1), brokerError('INVALID_REQUEST'));
  });
});
