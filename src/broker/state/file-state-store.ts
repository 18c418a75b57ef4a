// The embedded state store: one JSON file written atomically (temp file, fsync, rename,
// fsync of the folder) so a crash never leaves it half-written. A missing file is normal
// (first start: rebuilt from the backends); a corrupt one is never overwritten, also when
// someone damages it while the broker runs. A symlinked path is written through: the
// rename replaces the link's target, in the target's folder, and the link stays.
import { randomBytes } from 'node:crypto';
import { unwatchFile, watchFile, type Stats } from 'node:fs';
import { mkdir, open, readFile, readlink, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { BrokerError, isBrokerError } from '../../errors.ts';
import { parseState } from './state-schema.ts';
import type { StateStore } from './state-store.ts';

/** What identifies one written version of the file: a rename gives every write a new inode. */
interface FileIdentity {
  readonly ino: number;
  readonly size: number;
  readonly mtimeMs: number;
}

/** Symlink hops followed before giving up, as the kernel's own limit (ELOOP). */
const MAX_LINK_HOPS = 40;

export function fileStateStore(path: string): StateStore {
  /** The file as this store last wrote it; the watch ignores it, and save may replace it. */
  let ownWrite: FileIdentity | undefined;

  return {
    location: path,

    async load() {
      let text: string;
      try {
        text = await readFile(path, 'utf8');
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
        throw new BrokerError(
          'STATE_CORRUPT',
          `cannot read state file ${path}: ${(error as NodeJS.ErrnoException).code}`,
        );
      }
      return parseState(text, path);
    },

    async save(state) {
      try {
        const target = await linkTarget(path);
        await refuseForeignDamage(target, ownWrite);
        ownWrite = await replaceAtomically(target, JSON.stringify(state, null, 2) + '\n');
      } catch (error) {
        if (isBrokerError(error)) throw error;
        const code = (error as NodeJS.ErrnoException).code ?? 'error';
        throw new BrokerError(
          'STATE_WRITE_FAILED',
          `cannot write state file ${path} (${code}); ${writeFixes[code] ?? 'check the file, its folder and its filesystem'}`,
          code,
        );
      }
    },

    watch(onChange, intervalMs) {
      // Polling, not fs.watch: it survives the rename that replaces the file and works
      // on every filesystem a state folder may live on.
      const listener = (current: Stats, previous: Stats) => {
        if (same(identity(current), identity(previous))) return;
        if (ownWrite !== undefined && same(identity(current), ownWrite)) return;
        onChange();
      };
      watchFile(path, { interval: intervalMs, persistent: false }, listener);
      return () => unwatchFile(path, listener);
    },
  };
}

const writeFixes: Readonly<Record<string, string>> = {
  ENOSPC: 'the disk is full; free space in its filesystem',
  EDQUOT: "the broker's user is over its disk quota; free space or raise the quota",
  EROFS: 'the filesystem is read-only; set state.path to a writable one',
  EACCES: "the broker's user may not write there; give it the folder (mode 0700)",
  EPERM: "the broker's user may not write there; give it the folder (mode 0700)",
  ENOTDIR: 'a part of the path is a file, not a folder; correct state.path',
  ELOOP: 'the path is a loop of symbolic links; correct it',
};

/** Where a write to `path` lands: the final target of its symlinks (which need not exist yet). */
async function linkTarget(path: string): Promise<string> {
  let at = path;
  for (let hops = 0; hops < MAX_LINK_HOPS; hops++) {
    let link: string;
    try {
      link = await readlink(at);
    } catch (error) {
      // EINVAL: not a link; ENOENT: nothing there yet. Either way, the write goes here.
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'EINVAL' || code === 'ENOENT') return at;
      throw error;
    }
    at = resolve(dirname(at), link);
  }
  throw Object.assign(new Error('too many symbolic links'), { code: 'ELOOP' });
}

/**
 * A file that is not this store's last write was changed by someone else: replacing it is
 * fine when it still parses (the watch reloads such edits), never when it is damaged, as
 * it may be the only record of what the operator meant. A check, then a rename: an edit in
 * between is not caught, which a hand edit made during a write is unlikely to hit.
 */
async function refuseForeignDamage(target: string, ownWrite: FileIdentity | undefined): Promise<void> {
  let current: Stats;
  try {
    current = await stat(target);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw error;
  }
  if (ownWrite !== undefined && same(identity(current), ownWrite)) return;
  try {
    parseState(await readFile(target, 'utf8'), target);
  } catch (error) {
    if (!isBrokerError(error)) throw error;
    throw new BrokerError(
      'STATE_WRITE_FAILED',
      `state file ${target} was changed by another writer and no longer holds valid state; not overwriting it: restore it from a backup, or move it away and the broker writes its state from memory`,
      'STATE_CORRUPT',
    );
  }
}

/** Writes `text` to a temp file beside `target`, syncs it, renames it over `target`, syncs the folder. */
async function replaceAtomically(target: string, text: string): Promise<FileIdentity> {
  const folder = dirname(target);
  await mkdir(folder, { recursive: true, mode: 0o700 });
  const temp = join(folder, `.${basename(target)}.${randomBytes(6).toString('hex')}.tmp`);
  let written: FileIdentity;
  try {
    const file = await open(temp, 'wx', 0o600);
    try {
      await file.writeFile(text);
      await file.sync();
      written = identity(await file.stat());
    } finally {
      await file.close();
    }
    await rename(temp, target);
  } catch (error) {
    await rm(temp, { force: true });
    throw error;
  }
  const dir = await open(folder, 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
  return written;
}

function identity(stats: Stats): FileIdentity {
  return { ino: stats.ino, size: stats.size, mtimeMs: stats.mtimeMs };
}

function same(a: FileIdentity, b: FileIdentity): boolean {
  return a.ino === b.ino && a.size === b.size && a.mtimeMs === b.mtimeMs;
}
