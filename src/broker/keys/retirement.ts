// Whether stored data still needs a key version, judged by evidence: the newest usage scan
// of the cluster's etcd. A version may be retired once a scan that began after its last
// possible write shows no stored object that needs it, i.e. none whose envelope has no
// other wrap that is readable now. The same judgement is the stage a dashboard follows a
// rotation by (GET /v1/rotation).
import { BrokerError } from '../../errors.ts';
import type { StoredVersion } from '../state/state-schema.ts';
import type { UsageScan } from '../usage-scan.ts';

export type VersionStage =
  /** It wraps new seeds: rotate first. */
  | 'write'
  | 'retired'
  /** Stopped writing recently: apiservers that have not re-seeded may still write under it. */
  | 're-seeding'
  /** No scan that began after its last possible write is recorded. */
  | 'awaiting-scan'
  /** The scan shows stored objects that need it: migrate them. */
  | 'needed'
  /** The scan found values under the broker's provider that it could not decode. */
  | 'unclear'
  | 'retirable';

export interface VersionJudgement {
  readonly backend: string;
  readonly version: string;
  readonly stage: VersionStage;
  readonly writeEndedAt?: string;
  /** A scan must begin after this to count as evidence for this version. */
  readonly scanNeededAfter?: string;
  /** Objects of the scan that need it, in all and per resource. */
  readonly neededBy?: { readonly objects: number; readonly resources: Record<string, number> };
}

export interface JudgementInput {
  readonly backend: string;
  readonly version: StoredVersion;
  readonly isWriteVersion: boolean;
  readonly lastScan: UsageScan | undefined;
  /** Whether another backend version can unwrap now (configured, known, not retired). */
  readonly readable: (backend: string, version: string) => boolean;
  readonly scanAfterWriteMs: number;
  readonly now: Date;
}

export function judgeVersion(input: JudgementInput): VersionJudgement {
  const { backend, version: stored, lastScan } = input;
  const base = { backend, version: stored.version };
  if (input.isWriteVersion) return { ...base, stage: 'write' };
  if (stored.state === 'retired') return { ...base, stage: 'retired' };
  const writeEndedAt = stored.writeEndedAt ?? stored.createdAt;
  const scanNeededAfter = new Date(Date.parse(writeEndedAt) + input.scanAfterWriteMs).toISOString();
  const timing = { writeEndedAt, scanNeededAfter };
  if (lastScan === undefined || Date.parse(lastScan.scannedAt) < Date.parse(scanNeededAfter)) {
    const stage = input.now.getTime() < Date.parse(scanNeededAfter) ? 're-seeding' : 'awaiting-scan';
    return { ...base, ...timing, stage };
  }
  const neededBy = { objects: 0, resources: {} as Record<string, number> };
  for (const set of lastScan.wrapSets) {
    const carries = set.wraps.some(wrap => wrap.backend === backend && wrap.version === stored.version);
    const elsewhere = set.wraps.some(
      wrap =>
        !(wrap.backend === backend && wrap.version === stored.version) &&
        input.readable(wrap.backend, wrap.version),
    );
    if (!carries || elsewhere) continue;
    neededBy.objects += set.objects;
    for (const [resource, count] of Object.entries(set.resources))
      neededBy.resources[resource] = (neededBy.resources[resource] ?? 0) + count;
  }
  if (neededBy.objects > 0) return { ...base, ...timing, stage: 'needed', neededBy };
  if (lastScan.undecodable.objects > 0) return { ...base, ...timing, stage: 'unclear' };
  return { ...base, ...timing, stage: 'retirable' };
}

/** Why a retirement without force is refused, or undefined when the evidence allows it. */
export function refusalFor(
  judgement: VersionJudgement,
  lastScan: UsageScan | undefined,
): BrokerError | undefined {
  const what = `version ${judgement.version} of backend ${judgement.backend}`;
  const scan =
    lastScan === undefined
      ? ''
      : `the usage scan of ${lastScan.scannedAt} (etcd revision ${lastScan.revision})`;
  switch (judgement.stage) {
    case 'retirable':
    case 'retired':
      return undefined;
    case 'write':
      return new BrokerError('VERSION_IN_USE', `${what} is its write version; rotate before retiring it`);
    case 'needed': {
      const { objects, resources } = judgement.neededBy ?? { objects: 0, resources: {} };
      return new BrokerError(
        'VERSION_IN_USE',
        `${what} is still needed by ${objects} stored objects with no other readable wrap (${describeCounts(resources)}) in ${scan}; run \`kms-broker migrate\`, then \`kms-broker usage\`, and retire again`,
      );
    }
    case 'unclear':
      return new BrokerError(
        'NO_USAGE_EVIDENCE',
        `${scan} found ${lastScan?.undecodable.objects ?? 0} values under the broker's provider that did not decode (${describeCounts(lastScan?.undecodable.resources ?? {})}), so it cannot show that none needs ${what}; inspect them with \`kms-broker usage --json\`, or force`,
      );
    case 're-seeding':
    case 'awaiting-scan': {
      const last = lastScan === undefined ? 'no usage scan is recorded' : `${scan} began before it`;
      return new BrokerError(
        'NO_USAGE_EVIDENCE',
        `${what} stopped writing at ${judgement.writeEndedAt}, and apiservers may write under it until ${judgement.scanNeededAfter} (retirement.scanAfterWriteMs); ${last}. Run \`kms-broker usage\` after ${judgement.scanNeededAfter} and retire again`,
      );
    }
  }
}

/** How far ahead of this node's clock a scan's start may be (the scanning host's clock). */
const MAX_CLOCK_SKEW_MS = 60_000;

/** Why a scan is not kept as the new evidence, or undefined when it is. */
export function scanRefusal(
  scan: UsageScan,
  kept: UsageScan | undefined,
  now: Date,
): BrokerError | undefined {
  // A scan dated later than it ran would count as evidence for writes it never saw.
  if (Date.parse(scan.scannedAt) > now.getTime() + MAX_CLOCK_SKEW_MS)
    return new BrokerError(
      'INVALID_REQUEST',
      `scannedAt ${scan.scannedAt} is in the future by this node's clock; check the clocks of the scanning host and this node (NTP)`,
    );
  if (kept !== undefined && Date.parse(kept.scannedAt) > Date.parse(scan.scannedAt))
    return new BrokerError(
      'SCAN_OUTDATED',
      `a newer usage scan (${kept.scannedAt}, etcd revision ${kept.revision}) is already recorded; this one (${scan.scannedAt}) is not kept`,
    );
  return undefined;
}

/** `secrets 200, configmaps 3`, the largest first, at most ten named. */
export function describeCounts(counts: Record<string, number>): string {
  const entries = Object.entries(counts).sort((a, b) => b[1] - a[1]);
  const named = entries.slice(0, 10).map(([name, count]) => `${name} ${count}`);
  if (entries.length > 10) named.push(`${entries.length - 10} more resources`);
  return named.join(', ') || 'no resource named';
}
