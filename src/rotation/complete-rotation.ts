// `kms-broker rotate --complete`: one rotation from start to retirement, each step the one an
// operator would run alone, in order: rotate, wait until every apiserver re-seeded, migrate
// the stored data, scan etcd, show what the old version still protects, and retire it after
// confirmation. Run again after an interruption, it continues the rotation it finds unfinished
// (versions that stopped writing and are not retired) instead of creating another version;
// every step is safe to repeat. The broker judges the retirement: this only asks it.
import type { RotationView, VersionJudgement } from '../broker/ports.ts';

export type RotationStep = 'rotate' | 're-seed' | 'migrate' | 'settle' | 'scan' | 'confirm' | 'retire';

export interface ScanSummary {
  readonly scannedAt: string;
  readonly revision: string;
  readonly objects: number;
}

export interface MigrationSummary {
  readonly resources: readonly string[];
  /** How (StorageVersionMigration or rewrite), and whether an earlier run did it. */
  readonly mode: string;
  /** Objects rewritten, where the migration counts them. */
  readonly objects?: number;
}

export interface RotationEvent {
  readonly step: RotationStep;
  readonly message: string;
}

/** What the steps are done with: the admin API, the migration, the scanner, the terminal. */
export interface RotationPorts {
  rotation(): Promise<RotationView>;
  rotate(backend: string): Promise<{ version: string; keyId: string }>;
  waitForReseed(keyId: string): Promise<void>;
  migrate(keyId: string): Promise<MigrationSummary>;
  /** Scans etcd and records the scan in the broker. */
  scan(): Promise<ScanSummary>;
  usage(): Promise<{ versions: readonly VersionJudgement[] }>;
  retire(backend: string, version: string): Promise<void>;
  /** Asks the operator; only called without --yes. */
  confirm(question: string): Promise<boolean>;
  waitUntil(at: Date): Promise<void>;
  now(): Date;
  report(event: RotationEvent): void;
}

export interface RotationOutcome {
  readonly backend: string;
  /** The new write version, or undefined when an unfinished rotation was continued. */
  readonly rotated?: { readonly version: string; readonly keyId: string };
  readonly keyId: string;
  readonly migrated: MigrationSummary;
  readonly scan: ScanSummary;
  /** The old versions, each with what the scan found still needing it. */
  readonly versions: readonly VersionJudgement[];
  readonly retired: readonly string[];
  /**
   * `retired`: every old version is retired; `declined`: the operator said no; `stopped`:
   * the scan shows an old version still needed (or cannot tell), so nothing was retired.
   */
  readonly result: 'retired' | 'declined' | 'stopped';
  /** Milliseconds per step. */
  readonly took: Partial<Record<RotationStep, number>>;
}

export async function completeRotation(
  backend: string,
  ports: RotationPorts,
  options: { readonly yes: boolean },
): Promise<RotationOutcome> {
  const took: Partial<Record<RotationStep, number>> = {};
  const timed = async <T>(step: RotationStep, run: () => Promise<T>): Promise<T> => {
    const started = ports.now().getTime();
    try {
      return await run();
    } finally {
      took[step] = (took[step] ?? 0) + ports.now().getTime() - started;
    }
  };
  const report = (step: RotationStep, message: string) => ports.report({ step, message });

  const before = await ports.rotation();
  const unfinished = before.versions.filter(version => version.backend === backend);
  let rotated: RotationOutcome['rotated'];
  if (unfinished.length === 0) {
    rotated = await timed('rotate', () => ports.rotate(backend));
    report('rotate', `rotated ${backend} to version ${rotated.version}; key_id is now ${rotated.keyId}`);
  } else {
    report(
      'rotate',
      `continuing the unfinished rotation of ${backend}: version ${names(unfinished)} not retired yet; no new version is created`,
    );
  }
  const keyId = rotated?.keyId ?? before.keyId;

  await timed('re-seed', () => ports.waitForReseed(keyId));
  report('re-seed', `every apiserver encrypts under key_id ${keyId}`);

  const migrated = await timed('migrate', () => ports.migrate(keyId));
  report(
    'migrate',
    `re-encrypted ${migrated.resources.join(', ')} under the new key_id (${migrated.mode}${migrated.objects === undefined ? '' : `, ${migrated.objects} objects`})`,
  );

  // A scan counts for a version only if it began after apiservers may have stopped writing
  // under it (the broker says when, per version).
  const old = () => ports.usage().then(({ versions }) => versions.filter(isOld(backend)));
  const settleAt = latest((await old()).map(version => version.scanNeededAfter));
  if (settleAt !== undefined && settleAt > ports.now()) {
    report(
      'settle',
      `waiting until ${settleAt.toISOString()}: a scan counts only once apiservers may no longer write under the old version`,
    );
    await timed('settle', () => ports.waitUntil(settleAt));
  }

  const scan = await timed('scan', () => ports.scan());
  report(
    'scan',
    `scanned ${scan.objects} stored values at etcd revision ${scan.revision} and recorded the scan`,
  );

  const versions = await old();
  for (const version of versions) report('scan', describe(version));
  const retirable = versions.filter(version => version.stage === 'retirable');
  const retired: string[] = [];
  const outcome = (result: RotationOutcome['result']): RotationOutcome => ({
    backend,
    ...(rotated !== undefined && { rotated }),
    keyId,
    migrated,
    scan,
    versions,
    retired,
    result,
    took,
  });
  if (retirable.length < versions.length) return outcome('stopped');

  if (retirable.length === 0) return outcome('retired');
  const question = `Retire version ${names(retirable)} of backend ${backend}? Data under ${retirable.length === 1 ? 'it' : 'them'} no longer decrypts (kms-broker restore undoes this).`;
  const confirmed = options.yes || (await timed('confirm', () => ports.confirm(question)));
  if (!confirmed) {
    report('confirm', `not retired; retire later with: kms-broker retire ${backend} <version>`);
    return outcome('declined');
  }
  for (const version of retirable) {
    await timed('retire', () => ports.retire(backend, version.version));
    retired.push(version.version);
    report('retire', `retired version ${version.version} of backend ${backend}`);
  }
  return outcome('retired');
}

/** The versions of `backend` a rotation leaves behind: stopped writing, not retired. */
function isOld(backend: string): (version: VersionJudgement) => boolean {
  return version => version.backend === backend && version.stage !== 'write' && version.stage !== 'retired';
}

function describe(version: VersionJudgement): string {
  const what = `version ${version.version} of backend ${version.backend}`;
  switch (version.stage) {
    case 'retirable':
      return `${what} protects 0 stored objects: nothing needs it`;
    case 'needed': {
      const { objects = 0, resources = {} } = version.neededBy ?? {};
      const where = Object.entries(resources)
        .map(([resource, count]) => `${resource} ${count}`)
        .join(', ');
      return `${what} still protects ${objects} stored objects (${where}): the migration did not reach them; run kms-broker migrate for these resources, then rotate --complete again`;
    }
    case 'unclear':
      return `${what}: the scan found values it could not decode; inspect them with kms-broker usage --json before retiring`;
    default:
      return `${what}: the scan does not count for it yet (${version.stage}); run rotate --complete again after ${version.scanNeededAfter ?? 'a while'}`;
  }
}

function names(versions: readonly VersionJudgement[]): string {
  return versions.map(version => version.version).join(', ');
}

function latest(times: readonly (string | undefined)[]): Date | undefined {
  const parsed = times.flatMap(time => (time === undefined ? [] : [Date.parse(time)]));
  return parsed.length === 0 ? undefined : new Date(Math.max(...parsed));
}
