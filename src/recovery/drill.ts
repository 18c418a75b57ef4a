// One drill: reads every value under the prefix (read-only Range, at one revision), unwraps
// each broker seed with each of its wraps' sources alone, and decrypts a sample of values (all
// with `full`) exactly as kube-apiserver would, to prove them readable. Progress is saved after
// every page when a state file is given, so an interrupted drill resumes where it stopped.
import type { EtcdClient } from '../usage/etcd-client.ts';
import { readPrefix, type Progress } from '../usage/paged-read.ts';
import { newState, writeState, type DrillSource, type DrillState } from './drill-state.ts';
import { countDecrypt, countKind, countOutcome, emptyTally, type DrillTally } from './drill-tally.ts';
import { decryptKmsV1, decryptKmsV2 } from './kms-decrypt.ts';
import type { SeedUnwrapper } from './seed-sources.ts';
import { ESCROW_MECHANISM } from '../escrow/hybrid-wrap.ts';
import { readValue, type BrokerValue } from './stored-value.ts';

export interface DrillOptions {
  readonly prefix: string;
  /** Values read a second at most (a live etcd), and per page. */
  readonly rate: number;
  readonly pageSize: number;
  /** Decrypt every value, not only the sample. */
  readonly full: boolean;
  /** Values to decrypt besides the first of every seed. */
  readonly sample: number;
  readonly source: DrillSource;
  readonly statePath?: string | undefined;
  readonly resume?: DrillState | undefined;
  readonly onProgress?: (progress: Progress) => void;
}

export interface DrillResult {
  readonly revision: string;
  readonly tally: DrillTally;
  /** Whether this run continued an interrupted one. */
  readonly resumed: boolean;
  readonly backendCalls: number;
  readonly durationMs: number;
}

export async function runDrill(
  client: EtcdClient,
  unwrapper: SeedUnwrapper,
  options: DrillOptions,
): Promise<DrillResult> {
  const started = performance.now();
  const { resume } = options;
  const tally = resume?.tally ?? emptyTally();
  const seedIds = new Set(resume?.seedIds ?? []);
  let revision = resume?.revision ?? '0';
  let lastKey = resume?.lastKey ?? '';
  let read = resume?.read ?? 0;
  const save = (finished: boolean) => {
    if (options.statePath !== undefined)
      writeState(
        options.statePath,
        newState(options.source, revision, lastKey, read, [...seedIds], tally, finished),
      );
  };
  const result = await readPrefix(client, {
    prefix: Buffer.from(options.prefix, 'utf8'),
    pageSize: options.pageSize,
    rate: options.rate,
    ...(resume !== undefined && {
      resume: { after: Buffer.from(resume.lastKey, 'utf8'), revision: resume.revision, read: resume.read },
    }),
    onPage: async (kvs, progress) => {
      for (const { key, value } of kvs) {
        const name = key.toString('utf8');
        const parsed = readValue(value);
        countKind(tally, parsed.kind, name);
        if (parsed.kind === 'kms-v2' || parsed.kind === 'kms-v1') await drillValue(name, key, parsed);
      }
      revision = progress.revision;
      read = progress.read;
      lastKey = kvs.at(-1)?.key.toString('utf8') ?? lastKey;
      save(false);
      options.onProgress?.(progress);
    },
  });

  async function drillValue(name: string, key: Buffer, value: BrokerValue): Promise<void> {
    const { outcome } = await unwrapper.outcome(value);
    const newSeed = !seedIds.has(value.seedId);
    seedIds.add(value.seedId);
    const escrowWrapped = value.wraps.some(wrap => wrap.header.mechanism === ESCROW_MECHANISM);
    countOutcome(tally, name, newSeed, outcome, escrowWrapped);
    const sampled = tally.decrypt.decrypted + tally.decrypt.failed.count;
    if (outcome.seed === undefined || !(options.full || newSeed || sampled < options.sample)) return;
    countDecrypt(tally, name, decrypts(value, outcome.seed, key));
  }

  revision = result.revision;
  save(true);
  return {
    revision,
    tally,
    resumed: resume !== undefined,
    backendCalls: unwrapper.backendCalls,
    durationMs: Math.round(performance.now() - started),
  };
}

/** Whether the value's data opens with its seed (or DEK) under its etcd key. The plaintext is dropped. */
export function decrypts(value: BrokerValue, seed: Buffer, key: Buffer): boolean {
  try {
    const plain =
      value.kind === 'kms-v2'
        ? decryptKmsV2(seed, value.sourceType ?? 0, value.encryptedData, key)
        : decryptKmsV1(seed, value.encryptedData, key);
    plain.fill(0);
    return true;
  } catch {
    return false;
  }
}
