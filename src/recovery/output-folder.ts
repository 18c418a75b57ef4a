// Where `recover` writes plaintext objects: a folder only this user can enter (created 0700, or
// an existing one of this user's with no group or other bits), files 0600 created exclusively
// so that nothing existing is ever overwritten, and never through a symlink planted inside.
import { chmodSync, lstatSync, mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { BrokerError } from '../errors.ts';
import { errnoOf, ownedFolder } from '../owned-folder.ts';

/** Checks or creates the folder; returns its absolute path. */
export function prepareOutput(folder: string): string {
  const path = resolve(folder);
  ownedFolder(
    path,
    0o077,
    what => refused(path, what),
    mode =>
      `its group or other users may enter, read or write it (mode ${mode}), and recovered Secrets are plaintext; \`chmod 700 ${path}\` or use a new folder`,
  );
  return path;
}

/**
 * Writes one file under `root`/`dirs`; false when it exists already (it is left as it is).
 * Each folder on the way must be a real folder, not a symlink.
 */
export function writeNew(
  root: string,
  dirs: readonly string[],
  name: string,
  bytes: Buffer | string,
): boolean {
  let dir = root;
  for (const part of dirs) {
    dir = join(dir, part);
    try {
      mkdirSync(dir, { mode: 0o700 });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST')
        throw refused(dir, `cannot create it (${errnoOf(error)})`);
      if (!lstatSync(dir).isDirectory()) throw refused(dir, 'is not a folder');
    }
  }
  const path = join(dir, name);
  try {
    writeFileSync(path, bytes, { flag: 'wx', mode: 0o600 });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw refused(path, `cannot write it (${errnoOf(error)})`);
  }
  chmodSync(path, 0o600);
  return true;
}

function refused(path: string, what: string): BrokerError {
  return new BrokerError('RECOVERY_OUTPUT_REFUSED', `recovery output ${path}: ${what}`);
}
