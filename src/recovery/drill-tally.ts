// What a drill counts, as one plain object: it is the report, the --json output and, with the
// position of the read, the state an interrupted drill resumes from. It holds etcd keys, counts
// and hashes of DEK ciphertexts only: never a seed, a wrapped key or a plaintext. Lists of keys
// are bounded; their counts are not.
import type { SeedOutcome } from './seed-sources.ts';
import type { ValueKind } from './stored-value.ts';

/** Keys listed per list at most (the count goes on). */
export const MAX_LISTED_KEYS = 50;

export interface KeyList {
  count: number;
  readonly keys: string[];
}

export interface DrillTally {
  /** Every key read under the prefix. */
  values: number;
  readonly byKind: Partial<Record<ValueKind, number>>;
  /** Values whose seed or DEK the broker wrapped (KMS v2 and v1). */
  ours: number;
  /** Distinct seeds (DEK ciphertexts) among them: what the unwraps were spent on. */
  seeds: number;
  /** Per source (backend name, or `escrow`): the values it alone can recover. */
  readonly recoverable: Record<string, number>;
  /** The values only this source can recover: what losing it costs. */
  readonly onlyBy: Record<string, KeyList>;
  /** The values no source could recover (undecodable broker values included). */
  readonly unrecoverable: KeyList;
  /** Why wraps did not unwrap, per source and reason: how many values each cost a wrap. */
  readonly failures: Record<string, Record<string, number>>;
  /** Values carrying an escrow wrap. */
  escrowWrapped: number;
  /** Values decrypted (the sample, or every value with --full). */
  readonly decrypt: { decrypted: number; readonly failed: KeyList };
}

export function emptyTally(): DrillTally {
  return {
    values: 0,
    byKind: {},
    ours: 0,
    seeds: 0,
    recoverable: {},
    onlyBy: {},
    unrecoverable: { count: 0, keys: [] },
    failures: {},
    escrowWrapped: 0,
    decrypt: { decrypted: 0, failed: { count: 0, keys: [] } },
  };
}

export function countKind(tally: DrillTally, kind: ValueKind, key: string): void {
  tally.values++;
  tally.byKind[kind] = (tally.byKind[kind] ?? 0) + 1;
  // Marked as the broker's but not decodable: nothing could recover it.
  if (kind === 'broker-undecodable') listKey(tally.unrecoverable, key);
}

/** Counts one broker value by what the sources made of its seed. */
export function countOutcome(
  tally: DrillTally,
  key: string,
  newSeed: boolean,
  outcome: SeedOutcome,
  escrowWrapped: boolean,
): void {
  tally.ours++;
  if (newSeed) tally.seeds++;
  if (escrowWrapped) tally.escrowWrapped++;
  for (const source of outcome.recoveredBy) tally.recoverable[source] = (tally.recoverable[source] ?? 0) + 1;
  const [only, ...others] = outcome.recoveredBy;
  if (only === undefined) listKey(tally.unrecoverable, key);
  else if (others.length === 0) listKey((tally.onlyBy[only] ??= { count: 0, keys: [] }), key);
  for (const { source, reason } of outcome.failures) {
    const reasons = (tally.failures[source] ??= {});
    reasons[reason] = (reasons[reason] ?? 0) + 1;
  }
}

export function countDecrypt(tally: DrillTally, key: string, ok: boolean): void {
  if (ok) tally.decrypt.decrypted++;
  else listKey(tally.decrypt.failed, key);
}

/** Every value recoverable and every decrypt tried succeeded. */
export function allRecoverable(tally: DrillTally): boolean {
  return tally.unrecoverable.count === 0 && tally.decrypt.failed.count === 0;
}

function listKey(list: KeyList, key: string): void {
  list.count++;
  if (list.keys.length < MAX_LISTED_KEYS) list.keys.push(key);
}
