// `kms-broker escrow init` and `escrow verify-shares`: the offline ceremony that makes the
// escrow key pair and splits its private key into Shamir shares, and the yearly check that the
// shares still rebuild it. Neither needs a broker, nor ever prints key bytes or share contents:
// the shares exist only in the 0600 files the operator asked for.
import { lstat, rm, writeFile, chmod } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { BrokerError } from '../errors.ts';
import { errnoOf, ownedFolder } from '../owned-folder.ts';
import { escrowKeyFromFiles } from '../escrow/key-from-files.ts';
import { fingerprint, formatPublicKeyFile, generateEscrowKeyPair } from '../escrow/key-files.ts';
import { formatShare } from '../escrow/share-format.ts';
import { MAX_SHARES, MIN_THRESHOLD, splitPrivateKey } from '../escrow/shares.ts';

export interface EscrowInitOptions {
  readonly out: string;
  readonly shares: string;
  readonly threshold: string;
  readonly json?: boolean;
}

const PUBLIC_KEY_FILE = 'escrow-public.pem';
const shareFileName = (index: number, total: number) => `share-${index}-of-${total}.txt`;

export async function escrowInitCommand(options: EscrowInitOptions, usage: (message: string) => never) {
  const total = Number(options.shares);
  const threshold = Number(options.threshold);
  if (!Number.isInteger(total) || total < MIN_THRESHOLD || total > MAX_SHARES)
    usage(
      `error: --shares: '${options.shares}' must be a whole number from ${MIN_THRESHOLD} to ${MAX_SHARES}`,
    );
  if (!Number.isInteger(threshold) || threshold < MIN_THRESHOLD || threshold > total)
    usage(
      `error: --threshold: '${options.threshold}' must be a whole number from ${MIN_THRESHOLD} to --shares`,
    );
  const folder = resolve(options.out);
  const names = [PUBLIC_KEY_FILE, ...Array.from({ length: total }, (_, i) => shareFileName(i + 1, total))];
  await prepareFolder(folder, names);

  const { publicKey, privateKey } = generateEscrowKeyPair();
  const shares = await splitPrivateKey(privateKey, total, threshold);
  const files: { readonly name: string; readonly text: string; readonly mode: number }[] = [
    { name: PUBLIC_KEY_FILE, text: formatPublicKeyFile(publicKey), mode: 0o644 },
    ...shares.map(share => ({
      name: shareFileName(share.index, total),
      text: `${formatShare(share)}\n`,
      mode: 0o600,
    })),
  ];
  const written: string[] = [];
  try {
    for (const file of files) {
      const path = join(folder, file.name);
      // 'wx': never through a file (or symlink) that appeared since the check.
      await writeFile(path, file.text, { flag: 'wx', mode: file.mode });
      written.push(path);
      await chmod(path, file.mode); // the umask may have taken bits the file needs
    }
  } catch (error) {
    // Half a ceremony is worse than none: a share set without its public key, or the reverse.
    await Promise.all(written.map(path => rm(path, { force: true })));
    throw refused(folder, `cannot write its files (${errnoOf(error)}); nothing was left behind`);
  } finally {
    for (const share of shares) share.bytes.fill(0);
  }

  const keyFingerprint = fingerprint(publicKey);
  const publicKeyPath = join(folder, PUBLIC_KEY_FILE);
  const sharePaths = shares.map(share => join(folder, shareFileName(share.index, total)));
  if (options.json === true) {
    const shareList = sharePaths.map((file, i) => ({ index: i + 1, file }));
    const result = {
      fingerprint: keyFingerprint,
      publicKey: publicKeyPath,
      threshold,
      total,
      shares: shareList,
    };
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
    return;
  }
  process.stdout.write(
    [
      `escrow key ${keyFingerprint}: any ${threshold} of its ${total} shares rebuild the private key; fewer reveal nothing.`,
      `  ${publicKeyPath}`,
      '    the public key: copy it to every broker host and name it in the config (it can only wrap).',
      ...sharePaths.map(path => `  ${path}`),
      `    one share per holder (0600): print it or copy it to the holder's own medium, then delete it here.`,
      `    Keep each share apart from the others; check them yearly with`,
      `    kms-broker escrow verify-shares --public-key ${PUBLIC_KEY_FILE} <${threshold} share files>`,
      '',
    ].join('\n'),
  );
}

/** Creates the folder (0700), or accepts an existing one no other user can write to that holds none of `names`. */
async function prepareFolder(folder: string, names: readonly string[]): Promise<void> {
  ownedFolder(
    folder,
    0o022,
    what => refused(folder, what),
    mode => `other users can write to it (mode ${mode}); \`chmod go-w ${folder}\` or use a new folder`,
  );
  const present = await Promise.all(
    names.map(name =>
      lstat(join(folder, name)).then(
        () => name,
        () => undefined,
      ),
    ),
  );
  const clashes = present.filter(name => name !== undefined);
  if (clashes.length > 0)
    throw refused(
      folder,
      `already holds ${clashes.join(', ')}, which would be overwritten; use a new folder`,
    );
}

export interface VerifySharesOptions {
  readonly publicKey: string;
  readonly json?: boolean;
}

export async function escrowVerifySharesCommand(shareFiles: readonly string[], options: VerifySharesOptions) {
  // The rebuilt key is only compared with the public key, then dropped: nothing is unwrapped.
  const { shares, fingerprint: keyFingerprint } = await escrowKeyFromFiles(options.publicKey, shareFiles);
  const [first] = shares;
  const { threshold, total } = first?.share ?? { threshold: 0, total: 0 };
  if (options.json === true) {
    const list = shares.map(({ source, share }) => ({ file: source, index: share.index }));
    const result = { ok: true, fingerprint: keyFingerprint, threshold, total, shares: list };
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
    return;
  }
  process.stdout.write(
    `ok: ${shares.length} shares (${shares.map(({ share }) => share.index).join(', ')} of ${total}, threshold ${threshold}) rebuild the private key of ${options.publicKey} (escrow key ${keyFingerprint}); nothing was unwrapped\n`,
  );
}

function refused(folder: string, what: string): BrokerError {
  return new BrokerError('ESCROW_OUTPUT_REFUSED', `escrow output folder ${folder}: ${what}`);
}
