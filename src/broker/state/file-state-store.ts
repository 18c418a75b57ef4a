// The embedded state store: one JSON file written atomically (temp file, fsync, rename,
// fsync of the folder) so a crash never leaves it half-written. A missing file is normal
// (first start: rebuilt from the backends); a corrupt one is never overwritten.
import { randomBytes } from 'node:crypto';
import { unwatchFile, watchFile, type Stats } from 'node:fs';
import { mkdir, open, readFile, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { BrokerError } from '../../errors.ts';
import { parseState } from './state-schema.ts';
import type { StateStore } from './state-store.ts';

/** What identifies one written version of the file: a rename gives every write a new inode. */
interface FileIdentity {
  readonly ino: number;
  readonly size: number;
  readonly mtimeMs: number;
}

export function fileStateStore(path: string): StateStore {
  /** The file as this store last wrote it; the watch ignores it. */
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
      const folder = dirname(path);
      await mkdir(folder, { recursive: true, mode: 0o700 });
      const temp = join(folder, `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
      let written: FileIdentity;
      try {
        const file = await open(temp, 'wx', 0o600);
        try {
          await file.writeFile(JSON.stringify(state, null, 2) + '\n');
          await file.sync();
          written = identity(await file.stat());
        } finally {
          await file.close();
        }
        await rename(temp, path);
      } catch (error) {
        await rm(temp, { force: true });
        throw error;
      }
      ownWrite = written;
      const dir = await open(folder, 'r');
      try {
        await dir.sync();
      } finally {
        await dir.close();
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

function identity(stats: Stats): FileIdentity {
  return { ino: stats.ino, size: stats.size, mtimeMs: stats.mtimeMs };
}

function same(a: FileIdentity, b: FileIdentity): boolean {
  return a.ino === b.ino && a.size === b.size && a.mtimeMs === b.mtimeMs;
}
