// Where a migration got to, kept in a small JSON file so that a rerun after an interruption
// (kill -9 included) neither starts over nor rewrites what was done, and a rerun after success
// is a no-op. One entry per cluster (its server URL) and key_id; written atomically (temp file,
// rename) after every step, so a kill leaves the previous or the next version, never half.
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { BrokerError } from '../errors.ts';

/** Progress of one resource. */
export interface ResourceProgress {
  readonly mode: 'svm' | 'rewrite';
  readonly done: boolean;
  /** Rewrite: the continue token that lists the page being worked on ('' = the first page). */
  readonly pageContinue?: string;
  /** Rewrite: "<namespace>/<name>" (or "<name>") of the last object rewritten, in list order. */
  readonly lastDone?: string;
  /** Rewrite: objects rewritten so far, over all runs. */
  readonly rewritten?: number;
  /** SVM: the StorageVersionMigration's name. */
  readonly migration?: string;
}

export interface MigrationEntry {
  readonly server: string;
  readonly keyIdHash: string;
  readonly startedAt: string;
  readonly finishedAt?: string;
  readonly resources: Readonly<Record<string, ResourceProgress>>;
}

interface StateFile {
  readonly version: 1;
  readonly migrations: Readonly<Record<string, MigrationEntry>>;
}

/** `sha256:<hex>` of the key_id, the form the apiserver's metrics use too. */
export function keyIdHash(keyId: string): string {
  return `sha256:${createHash('sha256').update(keyId, 'utf8').digest('hex')}`;
}

export function defaultStatePath(env = process.env): string {
  const cache =
    env.XDG_CACHE_HOME !== undefined && env.XDG_CACHE_HOME !== ''
      ? env.XDG_CACHE_HOME
      : join(homedir(), '.cache');
  return join(cache, 'kms-broker', 'migrate-state.json');
}

export interface MigrationState {
  readonly path: string;
  get(): MigrationEntry | undefined;
  /** Records a resource's progress and writes the file. */
  update(resource: string, progress: ResourceProgress): void;
  /** Marks the whole migration finished. */
  finish(): void;
}

/** Opens the entry of (server, key_id) in the file at `path`, creating neither until a write. */
export function openState(
  path: string,
  server: string,
  keyId: string,
  now = () => new Date(),
): MigrationState {
  const hash = keyIdHash(keyId);
  const key = `${server} ${hash}`;
  let file = readState(path);
  const write = (entry: MigrationEntry) => {
    file = { version: 1, migrations: { ...file.migrations, [key]: entry } };
    writeAtomically(path, `${JSON.stringify(file, null, 2)}\n`);
  };
  const current = (): MigrationEntry =>
    file.migrations[key] ?? { server, keyIdHash: hash, startedAt: now().toISOString(), resources: {} };
  return {
    path,
    get: () => file.migrations[key],
    update(resource, progress) {
      const entry = current();
      write({ ...entry, resources: { ...entry.resources, [resource]: progress } });
    },
    finish() {
      write({ ...current(), finishedAt: now().toISOString() });
    },
  };
}

function readState(path: string): StateFile {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { version: 1, migrations: {} };
    throw new BrokerError(
      'MIGRATION_STATE_CORRUPT',
      `cannot read the migration state file ${path} (${(error as NodeJS.ErrnoException).code ?? 'error'}); fix its permissions or pass another --state-file`,
    );
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  if (!isStateFile(parsed))
    throw new BrokerError(
      'MIGRATION_STATE_CORRUPT',
      `the migration state file ${path} is not one kms-broker wrote; move it away (the migration then starts over, which is safe) or pass another --state-file`,
    );
  return parsed;
}

function isStateFile(value: unknown): value is StateFile {
  if (typeof value !== 'object' || value === null) return false;
  const { version, migrations } = value as { version?: unknown; migrations?: unknown };
  if (version !== 1 || typeof migrations !== 'object' || migrations === null) return false;
  return Object.values(migrations).every(
    entry =>
      typeof entry === 'object' &&
      entry !== null &&
      typeof (entry as MigrationEntry).server === 'string' &&
      typeof (entry as MigrationEntry).keyIdHash === 'string' &&
      typeof (entry as MigrationEntry).resources === 'object',
  );
}

function writeAtomically(path: string, text: string): void {
  try {
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    const temp = `${path}.${process.pid}.tmp`;
    writeFileSync(temp, text, { mode: 0o600 });
    renameSync(temp, path);
  } catch (error) {
    throw new BrokerError(
      'MIGRATION_STATE_CORRUPT',
      `cannot write the migration state file ${path} (${(error as NodeJS.ErrnoException).code ?? 'error'}); pass a writable --state-file`,
    );
  }
}
