// Gauges read from the broker at scrape time: the key set, Status, thin seeds, the rotation
// and the shared state. Each reads its source when Prometheus scrapes, so a value is never
// stale and nothing has to remember to update it. Labels stay bounded: backend names and
// key versions from the config and the state, a fixed set of stages, a key_id only hashed.
import { createHash } from 'node:crypto';
import { Gauge, type Registry } from 'prom-client';

export interface KeySet {
  readonly keyId: string;
  readonly writeVersions: readonly { backend: string; version: string }[];
}

/** What Status says, and which key_ids' seeds went out without some backends' wraps. */
export interface StatusEvidence {
  readonly keyId: string;
  readonly healthz: string;
  readonly underReplicatedKeyIds: readonly string[];
}

/** The stages of a rotation as GET /v1/rotation reports them (src/broker/keys/retirement.ts). */
export const ROTATION_STAGES = [
  'steady',
  're-seeding',
  'awaiting-scan',
  'needed',
  'unclear',
  'retirable',
] as const;
export type RotationStage = (typeof ROTATION_STAGES)[number];

/** What GET /v1/rotation says of the versions a rotation left behind, and the newest usage scan. */
export interface RotationEvidence {
  readonly stage: string;
  readonly lastScan?: { readonly scannedAt: string };
  readonly versions: readonly {
    readonly backend: string;
    readonly version: string;
    readonly stage: string;
    readonly writeEndedAt?: string;
    readonly neededBy?: { readonly objects: number };
  }[];
}

/** What the cluster gauges read of the shared state's view. */
export interface ClusterHealth {
  readonly members: readonly unknown[];
  readonly converged: boolean;
  readonly etcd: { readonly reachable: boolean };
}

/** Where the gauges read from; each is set once the broker has started. */
export interface ScrapeSources {
  keySet?: () => KeySet;
  status?: () => StatusEvidence;
  rotation?: () => RotationEvidence;
  cluster?: () => ClusterHealth;
}

const seconds = (iso: string) => Date.parse(iso) / 1000;

export function registerStateGauges(registry: Registry, sources: ScrapeSources): void {
  const registers = [registry];
  /** A gauge without labels, absent while its source is unset. */
  const single = <T>(name: string, help: string, source: () => T | undefined, value: (view: T) => number) =>
    new Gauge({
      name,
      help,
      registers,
      collect() {
        this.reset();
        const view = source();
        if (view !== undefined) this.set(value(view));
      },
    });
  /** A gauge whose series are rebuilt from the source on every scrape. */
  const labelled = <L extends string>(
    name: string,
    help: string,
    labelNames: readonly L[],
    fill: (set: (labels: Record<L, string>, value: number) => void) => void,
  ) =>
    new Gauge<L>({
      name,
      help,
      labelNames,
      registers,
      collect() {
        this.reset();
        fill((labels, value) => this.set(labels as Partial<Record<L, string>>, value));
      },
    });

  labelled(
    'kms_broker_write_key_version',
    'The key version each backend writes with (numeric versions only).',
    ['backend'],
    set => {
      for (const { backend, version } of sources.keySet?.().writeVersions ?? []) {
        const numeric = Number(version);
        if (Number.isFinite(numeric)) set({ backend }, numeric);
      }
    },
  );
  labelled(
    'kms_broker_key_id_info',
    'The current key_id, as the first 12 hex digits of its SHA-256; always 1.',
    ['key_id_hash'],
    set => {
      const keyId = sources.keySet?.().keyId;
      if (keyId !== undefined)
        set({ key_id_hash: createHash('sha256').update(keyId).digest('hex').slice(0, 12) }, 1);
    },
  );

  const status = () => sources.status?.();
  single(
    'kms_broker_status_healthy',
    'Whether Status answers healthz "ok" (1), i.e. writes would succeed, or not (0).',
    status,
    view => (view.healthz === 'ok' ? 1 : 0),
  );
  single(
    'kms_broker_thin_seeds',
    "key_ids whose seeds went out (wrap: all) without some backends' wraps, as GET /v1/status lists them; objects written under them read only through the backends that wrapped them until rewritten.",
    status,
    view => view.underReplicatedKeyIds.length,
  );
  single(
    'kms_broker_current_seed_thin',
    "Whether the current key_id's seed lacks some backends' wraps (1) until healing changes the key_id, or not (0).",
    status,
    view => (view.underReplicatedKeyIds.includes(view.keyId) ? 1 : 0),
  );

  const cluster = () => sources.cluster?.();
  single(
    'kms_broker_cluster_members',
    'Brokers registered under the shared state (live leases), this one included; absent without `cluster`.',
    cluster,
    view => view.members.length,
  );
  single(
    'kms_broker_cluster_converged',
    'Whether every registered broker advertises the committed key_id (1) or not (0); absent without `cluster`.',
    cluster,
    view => (view.converged ? 1 : 0),
  );
  single(
    'kms_broker_cluster_etcd_reachable',
    "Whether the shared state's etcd answered this broker's last call (1) or not (0): while 0, admin changes are refused; absent without `cluster`.",
    cluster,
    view => (view.etcd.reachable ? 1 : 0),
  );

  const rotation = () => sources.rotation?.();
  single(
    'kms_broker_usage_scan_timestamp_seconds',
    'When the newest recorded usage scan of etcd began, in Unix seconds (absent while none is recorded).',
    () => rotation()?.lastScan,
    scan => seconds(scan.scannedAt),
  );
  labelled(
    'kms_broker_rotation_stage',
    'The least advanced stage of the versions a rotation left behind (steady when none): 1 for the current stage, 0 for the others.',
    ['stage'],
    set => {
      const view = rotation();
      if (view === undefined) return;
      for (const stage of ROTATION_STAGES) set({ stage }, view.stage === stage ? 1 : 0);
    },
  );
  labelled(
    'kms_broker_old_key_version_stage',
    'Per key version that stopped writing and is not retired: 1 for its stage on the way to retirement, 0 for the others.',
    ['backend', 'version', 'stage'],
    set => {
      for (const { backend, version, stage: current } of rotation()?.versions ?? [])
        for (const stage of ROTATION_STAGES.slice(1))
          set({ backend, version, stage }, current === stage ? 1 : 0);
    },
  );
  labelled(
    'kms_broker_old_key_version_write_ended_timestamp_seconds',
    'Per key version that stopped writing and is not retired: when it stopped being the write version, in Unix seconds.',
    ['backend', 'version'],
    set => {
      for (const { backend, version, writeEndedAt } of rotation()?.versions ?? [])
        if (writeEndedAt !== undefined) set({ backend, version }, seconds(writeEndedAt));
    },
  );
  labelled(
    'kms_broker_old_key_version_needed_objects',
    'Per key version that stopped writing and is not retired: stored objects the newest usage scan shows needing it (no other readable wrap); -1 while no scan counts for it yet.',
    ['backend', 'version'],
    set => {
      for (const { backend, version, stage, neededBy } of rotation()?.versions ?? []) {
        const counted = stage === 'needed' || stage === 'retirable' || stage === 'unclear';
        set({ backend, version }, counted ? (neededBy?.objects ?? 0) : -1);
      }
    },
  );
}
