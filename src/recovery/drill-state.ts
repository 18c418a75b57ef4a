// The state of an interrupted drill (--state): which data it read (the snapshot's SHA-256, or
// the etcd endpoints, and the prefix), at which revision, up to which key, and the tallies so
// far. Never a seed. Written 0600 after every page, by rename so that a crash leaves the old
// state or the new one, never half; a state of other data is refused rather than mixed in.
import { closeSync, fchmodSync, fsyncSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { BrokerError } from '../errors.ts';
import type { DrillTally } from './drill-tally.ts';

const FORMAT = 'kms-broker-drill-state/v1';

/** What the drill reads: a drill resumes only on the same data. */
export interface DrillSource {
  /** `snapshot sha256:<hex>` or `etcd <endpoints>`. */
  readonly data: string;
  readonly prefix: string;
}

export interface DrillState {
  readonly format: typeof FORMAT;
  readonly source: DrillSource;
  readonly revision: string;
  /** The last key counted, and how many keys were read up to it. */
  readonly lastKey: string;
  readonly read: number;
  /** Seeds already counted (hashes of DEK ciphertexts), so a resumed drill counts each once. */
  readonly seedIds: readonly string[];
  readonly tally: DrillTally;
  /** Whether the drill got to its end; a finished state is not resumed but started over. */
  readonly finished: boolean;
}

export function newState(
  source: DrillSource,
  revision: string,
  lastKey: string,
  read: number,
  seedIds: readonly string[],
  tally: DrillTally,
  finished: boolean,
): DrillState {
  return { format: FORMAT, source, revision, lastKey, read, seedIds, tally, finished };
}

/** The state to resume from, undefined for a fresh drill; refuses one of other data. */
export function readState(path: string, source: DrillSource): DrillState | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw invalid(path, `cannot be read (${(error as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  let state: DrillState;
  try {
    state = JSON.parse(text) as DrillState;
  } catch {
    throw invalid(path, 'is not JSON');
  }
  if (
    state.format !== FORMAT ||
    typeof state.lastKey !== 'string' ||
    typeof state.revision !== 'string' ||
    typeof state.tally !== 'object'
  )
    throw invalid(path, `is not a drill state (${FORMAT})`);
  if (state.source.data !== source.data || state.source.prefix !== source.prefix)
    throw invalid(
      path,
      `belongs to a drill of ${state.source.data} under ${state.source.prefix}, not of ${source.data} under ${source.prefix}; give another --state file, or delete it to start over`,
    );
  return state.finished ? undefined : state;
}

export function writeState(path: string, state: DrillState): void {
  const temporary = `${path}.tmp`;
  let fd: number | undefined;
  try {
    fd = openSync(temporary, 'w', 0o600);
    fchmodSync(fd, 0o600); // a leftover temporary file keeps its mode otherwise
    writeSync(fd, `${JSON.stringify(state)}\n`);
    fsyncSync(fd);
    closeSync(fd);
    fd = undefined;
    renameSync(temporary, path);
  } catch (error) {
    if (fd !== undefined) closeSync(fd);
    throw new BrokerError(
      'DRILL_STATE_INVALID',
      `cannot write the drill state ${path} (${(error as NodeJS.ErrnoException).code ?? 'error'}); give a --state in a writable folder`,
    );
  }
}

function invalid(path: string, what: string): BrokerError {
  return new BrokerError('DRILL_STATE_INVALID', `drill state ${path} ${what}`);
}
