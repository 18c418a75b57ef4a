// Folders that take files no one else may swap or read (the escrow ceremony's shares, recovered
// plaintext): created 0700, or an existing real folder (never a symlink, which could be pointed
// elsewhere) owned by this user, without the mode bits its caller forbids.
import { chmodSync, lstatSync, mkdirSync } from 'node:fs';

/** Why a folder was refused, in words for the caller's own error (which names the folder). */
export type Refuse = (why: string) => Error;

/**
 * Creates `path` 0700, or checks the existing one; `forbidden` are the mode bits it must lack,
 * and `forbiddenWhy` says why, given the folder's mode in octal.
 */
export function ownedFolder(
  path: string,
  forbidden: number,
  refuse: Refuse,
  forbiddenWhy: (mode: string) => string,
): void {
  try {
    mkdirSync(path, { mode: 0o700 });
    chmodSync(path, 0o700); // the umask may have taken bits; none must be added
    return;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST')
      throw refuse(`cannot create it (${errnoOf(error)})`);
  }
  const stats = lstatSync(path);
  if (!stats.isDirectory())
    throw refuse('is not a folder (a symlink is refused: it could be pointed elsewhere)');
  if (stats.uid !== process.getuid?.()) throw refuse('belongs to another user; use a folder of your own');
  if ((stats.mode & forbidden) !== 0) throw refuse(forbiddenWhy((stats.mode & 0o777).toString(8)));
}

/** The errno code of a file system failure, for messages that name it. */
export function errnoOf(error: unknown): string {
  return (error as NodeJS.ErrnoException).code ?? 'unknown error';
}
