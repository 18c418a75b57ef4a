// `kms-broker escrow init` and `escrow verify-shares` as an operator runs them: the files and
// their modes, a pass with M shares, a failure naming the mistyped share, M−1 refused, and an
// output folder others could write to refused.
import assert from 'node:assert/strict';
import {
  chmodSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runCli } from '../helpers/cli-run.ts';

const root = mkdtempSync(join(tmpdir(), 'kms-escrow-'));
const out = join(root, 'ceremony');
const publicKey = join(out, 'escrow-public.pem');
const share = (index: number) => join(out, `share-${index}-of-5.txt`);

describe('kms-broker escrow', () => {
  let initJson: {
    fingerprint: string;
    threshold: number;
    total: number;
    shares: { index: number; file: string }[];
  };

  before(async () => {
    const run = await runCli(['escrow', 'init', '--out', out, '--shares', '5', '--threshold', '3', '--json']);
    assert.equal(run.code, 0, run.stderr);
    initJson = JSON.parse(run.stdout) as typeof initJson;
  });
  after(() => rmSync(root, { recursive: true, force: true }));

  it('init writes the public key 0644 and five shares 0600 into a 0700 folder, and prints no share', () => {
    assert.equal(statSync(out).mode & 0o777, 0o700);
    assert.equal(statSync(publicKey).mode & 0o777, 0o644);
    assert.deepEqual(readdirSync(out).sort(), [
      'escrow-public.pem',
      ...[1, 2, 3, 4, 5].map(index => `share-${index}-of-5.txt`),
    ]);
    for (const index of [1, 2, 3, 4, 5]) {
      assert.equal(statSync(share(index)).mode & 0o777, 0o600);
      const text = readFileSync(share(index), 'utf8');
      assert.match(text, new RegExp(`^kbes1-${index}of5-m3-${initJson.fingerprint}-`));
      assert.ok(!JSON.stringify(initJson).includes(text.trim().split('-')[4] as string));
    }
    assert.equal(initJson.threshold, 3);
    assert.equal(initJson.shares.length, 5);
  });

  it('verify-shares passes with 3 of the 5 shares', async () => {
    const run = await runCli([
      'escrow',
      'verify-shares',
      '--public-key',
      publicKey,
      share(2),
      share(5),
      share(3),
    ]);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /^ok: 3 shares \(2, 5, 3 of 5, threshold 3\) rebuild the private key/);
    assert.ok(run.stdout.includes(initJson.fingerprint));
  });

  it('verify-shares fails naming the share with a typo', async () => {
    const typo = join(root, 'typed-share-4.txt');
    const text = readFileSync(share(4), 'utf8');
    const position = 25; // inside the first group of share data
    writeFileSync(
      typo,
      `${text.slice(0, position)}${text[position] === 'A' ? 'B' : 'A'}${text.slice(position + 1)}`,
    );
    const run = await runCli([
      'escrow',
      'verify-shares',
      '--public-key',
      publicKey,
      share(1),
      typo,
      share(5),
    ]);
    assert.equal(run.code, 1);
    assert.match(run.stderr, new RegExp(`ESCROW_SHARES_INVALID: share ${typo}: its checksum does not match`));
  });

  it('verify-shares fails with 2 shares, and with the public key of another ceremony', async () => {
    const two = await runCli(['escrow', 'verify-shares', '--public-key', publicKey, share(1), share(2)]);
    assert.equal(two.code, 1);
    assert.match(two.stderr, /ESCROW_SHARES_INVALID: 2 share\(s\) given, the key needs 3 of its 5/);
    const other = join(root, 'other');
    assert.equal(
      (await runCli(['escrow', 'init', '--out', other, '--shares', '2', '--threshold', '2'])).code,
      0,
    );
    const run = await runCli([
      'escrow',
      'verify-shares',
      '--public-key',
      join(other, 'escrow-public.pem'),
      share(1),
      share(2),
      share(3),
    ]);
    assert.equal(run.code, 1);
    assert.match(run.stderr, new RegExp(`share ${share(1)} belongs to escrow key ${initJson.fingerprint}`));
  });

  it('init refuses a folder others can write to, and one holding its files, writing nothing', async () => {
    const open = join(root, 'open');
    mkdirSync(open);
    chmodSync(open, 0o777);
    const run = await runCli(['escrow', 'init', '--out', open, '--shares', '3', '--threshold', '2']);
    assert.equal(run.code, 1);
    assert.match(
      run.stderr,
      new RegExp(`ESCROW_OUTPUT_REFUSED: escrow output folder ${open}: other users can write to it`),
    );
    assert.deepEqual(readdirSync(open), []);
    const again = await runCli(['escrow', 'init', '--out', out, '--shares', '5', '--threshold', '3']);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /already holds escrow-public\.pem, share-1-of-5\.txt/);
  });

  it('init refuses a threshold above the shares as a usage error (exit 2)', async () => {
    const run = await runCli([
      'escrow',
      'init',
      '--out',
      join(root, 'x'),
      '--shares',
      '3',
      '--threshold',
      '4',
    ]);
    assert.equal(run.code, 2);
    assert.match(run.stderr, /--threshold: '4' must be a whole number from 2 to --shares/);
  });
});
