// The escrow private key rebuilt from share files, checked against the public key file: what
// the yearly share check, the drill and a recovery all start from. Files are read bounded
// (a share is one line), and every refusal names the file.
import { readFileSync } from 'node:fs';
import { BrokerError } from '../errors.ts';
import { errnoOf } from '../owned-folder.ts';
import { fingerprint, parsePublicKeyFile, type EscrowPrivateKey, type EscrowPublicKey } from './key-files.ts';
import { parseShare } from './share-format.ts';
import { combineShares, type SourcedShare } from './shares.ts';

/** A share file is read whole; anything much longer than a share is not one. */
const MAX_SHARE_FILE_BYTES = 4096;
const MAX_PUBLIC_KEY_FILE_BYTES = 16 * 1024;

export interface RebuiltEscrowKey {
  readonly publicKey: EscrowPublicKey;
  readonly privateKey: EscrowPrivateKey;
  readonly fingerprint: string;
  readonly shares: readonly SourcedShare[];
}

export async function escrowKeyFromFiles(
  publicKeyFile: string,
  shareFiles: readonly string[],
): Promise<RebuiltEscrowKey> {
  const publicKeyText = readBounded(
    publicKeyFile,
    MAX_PUBLIC_KEY_FILE_BYTES,
    reason => new BrokerError('ESCROW_KEY_INVALID', `escrow public key ${publicKeyFile}: ${reason}`),
  );
  const publicKey = parsePublicKeyFile(publicKeyText, publicKeyFile);
  const shares = shareFiles.map(file => ({
    source: file,
    share: parseShare(
      readBounded(
        file,
        MAX_SHARE_FILE_BYTES,
        reason => new BrokerError('ESCROW_SHARES_INVALID', `share ${file}: ${reason}`),
      ),
      file,
    ),
  }));
  const privateKey = await combineShares(shares, publicKey, publicKeyFile);
  return { publicKey, privateKey, fingerprint: fingerprint(publicKey), shares };
}

function readBounded(file: string, limit: number, refuse: (reason: string) => BrokerError): string {
  let bytes: Buffer;
  try {
    bytes = readFileSync(file);
  } catch (error) {
    throw refuse(`cannot read it (${errnoOf(error)})`);
  }
  if (bytes.length > limit) throw refuse(`is ${bytes.length} bytes, far more than such a file holds`);
  return bytes.toString('utf8');
}
