// One run's figures and how they relate: the types of the JSON a run writes, and each broker
// figure's limits: the bare transport alone, the bare transport plus the bare backend
// operation, and (on the same SoftHSM token) the Go reference plugin.
import type { CliStartResult } from './cli-start.ts';
import type { LoadResult } from './load.ts';
import type { Heap } from './measures.ts';

/** The broker on a network HSM (the test shim with a round trip per call), and the Go plugin on it. */
export const NETWORK_HSM = 'network hsm';
export const NETWORK_REFERENCE = 'go reference, network hsm';
/** Which Go reference run a broker group is set beside. */
export const REFERENCE_OF: Readonly<Record<string, string>> = {
  softhsm: 'go reference',
  [NETWORK_HSM]: NETWORK_REFERENCE,
};

export interface CaseResult extends LoadResult {
  readonly group: string;
  readonly operation: string;
  readonly concurrency: number;
  /** CPU (user + system, all threads) the serving process spent on the case, in ms... */
  readonly cpuMs?: number;
  /** ...and per 1,000 calls. */
  readonly cpuMsPer1000Calls?: number;
}

export interface StormResult extends LoadResult {
  readonly group: string;
  /** Distinct seeds decrypted; reports written before issue 19 ran only the 1,000. */
  readonly deks?: number;
  readonly eventLoopDelayP99Ms?: number;
  readonly eventLoopDelayMaxMs?: number;
  readonly rssBeforeMb?: number;
  readonly rssPeakMb?: number;
  readonly rssAfterMb?: number;
  readonly peakSince?: string;
  /** The broker's V8 heap right after the storm (a scrape during it would reset the loop histogram). */
  readonly heapAtEnd?: Heap;
  readonly cpuMs?: number;
  readonly cpuMsPer1000Calls?: number;
}

/** A plugin's resident memory once started and left alone (bench/proc.ts idleResidentMemory). */
export interface IdleResult {
  readonly group: string;
  readonly rssMb: number;
  /** False when two reads never agreed within 1 MB before the bound: the last read stands. */
  readonly settled: boolean;
  readonly reads: number;
  readonly heap?: Heap;
}

export interface Machine {
  readonly cpus: number;
  readonly model: string;
  readonly memoryMb: number;
  readonly kernel: string;
  readonly node: string;
  /** 1, 5 and 15 minute load averages when the run started and when it ended. */
  readonly loadAverageStart: readonly number[];
  readonly loadAverageEnd: readonly number[];
}

export interface Report {
  readonly date: string;
  readonly mode: 'quick' | 'full';
  readonly caseMs: number;
  readonly machine: Machine;
  readonly wallSeconds: number;
  readonly cases: readonly CaseResult[];
  readonly storms: readonly StormResult[];
  /** Idle memory (issue 19); absent from reports written before. */
  readonly idle?: readonly IdleResult[];
  /** CLI start times (issue 17); absent from reports written before. */
  readonly cliStarts?: readonly CliStartResult[];
  readonly notes: readonly string[];
}

export interface Target {
  readonly target: string;
  readonly measured: string;
  readonly met: boolean | 'report';
}

/** Which bare backend bounds a broker group's operation; wrap: all waits for the slower. */
const backendsOf: Record<string, Record<string, readonly string[]>> = {
  softhsm: { encrypt: ['bare pkcs11'], decrypt: ['bare pkcs11'] },
  openbao: { encrypt: ['bare transit'], decrypt: ['bare transit'] },
  'first:hsm,vault': { encrypt: ['bare pkcs11'], decrypt: ['bare pkcs11'] },
  'all:hsm,vault': { encrypt: ['bare pkcs11', 'bare transit'], decrypt: ['bare pkcs11'] },
  // The escrow wrap is local arithmetic beside the HSM's call: the HSM still bounds it.
  'first:hsm+escrow': { encrypt: ['bare pkcs11'], decrypt: ['bare pkcs11'] },
};
/** The bare backend cases ran at the broker's own bounds: 4 HSM sessions, 32 Transit calls. */
const backendConcurrency: Record<string, number> = { 'bare pkcs11': 4, 'bare transit': 32 };

interface Limit {
  readonly p50Ms: number;
  readonly perSecond: number;
}

export function find(cases: readonly CaseResult[], group: string, operation: string, concurrency: number) {
  return cases.find(c => c.group === group && c.operation === operation && c.concurrency === concurrency);
}

/** Transport plus the backend operation(s) behind a broker case; transport alone for Status. */
export function limitOf(cases: readonly CaseResult[], row: CaseResult): Limit | undefined {
  const operation = row.operation.replace(/^v1beta1 /, '');
  const transport = find(cases, 'transport', operation, row.concurrency);
  if (transport === undefined) return undefined;
  if (operation === 'status') return transport;
  const backends = (backendsOf[row.group]?.[operation] ?? []).map(group =>
    find(cases, group, operation, row.concurrency === 1 ? 1 : (backendConcurrency[group] ?? 1)),
  );
  if (backends.length === 0 || backends.some(backend => backend === undefined)) return undefined;
  const bare = backends as CaseResult[];
  return {
    p50Ms: transport.p50Ms + Math.max(...bare.map(backend => backend.p50Ms)),
    perSecond: Math.min(transport.perSecond, ...bare.map(backend => backend.perSecond)),
  };
}

export const ratio = (ours: number, theirs: number | undefined) =>
  theirs === undefined || !Number.isFinite(theirs) || theirs === 0 ? '' : `${(ours / theirs).toFixed(2)}×`;

export function fixed(ms: number): string {
  return Number.isFinite(ms) ? ms.toFixed(ms < 10 ? 3 : 1) : '-';
}
