// The admin service behind the HTTP admin API and the CLI: read views of the key set and of
// backend health, and the changes an operator makes (rotate, retire, restore, failover).
import type { KekBackend } from '../backends/kek.ts';
import type { HealthMonitor } from './health/health-monitor.ts';
import type { KeySet } from './keys/key-set.ts';
import type { UsageLog } from './keys/usage.ts';
import type { VersionJudgement } from './keys/retirement.ts';
import { BrokerError } from '../errors.ts';
import type {
  AdminService,
  AdminStatus,
  BackendView,
  ClusterView,
  KmsService,
  RotationView,
  VersionView,
} from './ports.ts';
import type { ThinSeeds } from './thin-seeds.ts';

export interface AdminServiceDeps {
  readonly kms: Pick<KmsService, 'status'>;
  readonly backends: ReadonlyMap<string, KekBackend>;
  readonly keys: KeySet;
  readonly usage: UsageLog;
  readonly health: HealthMonitor;
  readonly thinSeeds: ThinSeeds;
  readonly startedAt: Date;
  /** The shared state's view of the cluster, when the broker shares its state. */
  readonly cluster: (() => ClusterView) | undefined;
}

export function createAdminService(deps: AdminServiceDeps): AdminService {
  const { keys, health } = deps;
  const names = () => [...deps.backends.keys()];
  /** Every version judged against one copy of the newest scan (a copy costs up to ~1 MiB). */
  const judgements = (scan = keys.lastScan()) =>
    Object.entries(keys.stored()).flatMap(([name, entry]) =>
      entry.versions.map(version => keys.judge(name, version, scan)),
    );

  return {
    status() {
      const status = deps.kms.status();
      return {
        keyId: status.keyId,
        healthz: status.healthz,
        kmsApiVersion: status.version,
        writeVersions: Object.fromEntries(
          names().flatMap(name => {
            const version = keys.writeVersion(name)?.version;
            return version === undefined ? [] : [[name, version]];
          }),
        ),
        failover: keys.failover,
        degraded: names().filter(name => health.health(name)?.healthy !== true),
        underReplicatedKeyIds: deps.thinSeeds.keyIds(),
        uptimeSeconds: Math.round((Date.now() - deps.startedAt.getTime()) / 1000),
        ...(deps.cluster !== undefined && { cluster: clusterSummary(deps.cluster()) }),
      };
    },

    backends() {
      return [...deps.backends.values()].map(({ name, type, writeOnly }): BackendView => {
        const state = health.health(name);
        const writeVersion = keys.writeVersion(name)?.version;
        return {
          name,
          type,
          healthy: state?.healthy === true,
          breaker: state?.breaker ?? 'closed',
          ...(state?.reason !== undefined && { reason: state.reason }),
          ...(state?.lastProbeAt !== undefined && { lastProbeAt: state.lastProbeAt.toISOString() }),
          ...(state?.lastProbeMs !== undefined && { lastProbeMs: Math.round(state.lastProbeMs * 100) / 100 }),
          errors: { ...state?.errors },
          ...(writeVersion !== undefined && { writeVersion }),
          ...(writeOnly === true && { writeOnly }),
        };
      });
    },

    keys() {
      return Object.fromEntries(
        Object.entries(keys.stored()).map(([name, entry]) => [
          name,
          entry.versions.map((version): VersionView => {
            const usage = deps.usage.view(name, version);
            return {
              version: version.version,
              role: version.version === entry.writeVersion ? 'write' : version.state,
              createdAt: version.createdAt,
              ...(usage.lastDecryptAt !== undefined && { lastDecryptAt: usage.lastDecryptAt }),
              decryptCount: usage.decryptCount,
              decryptsSinceStart: usage.decryptsSinceStart,
            };
          }),
        ]),
      );
    },

    rotate: backend => keys.rotate(backend),
    retire: (backend, version, options) => keys.retire(backend, version, options),
    restore: (backend, version) => keys.restore(backend, version),
    recordScan: scan => keys.recordScan(scan),
    usage() {
      const lastScan = keys.lastScan();
      return { lastScan, versions: judgements(lastScan) };
    },
    rotation() {
      const scan = keys.lastScan();
      const versions = judgements(scan).filter(({ stage }) => stage !== 'write' && stage !== 'retired');
      return {
        keyId: deps.kms.status().keyId,
        stage: leastAdvanced(versions),
        versions,
        ...(scan !== undefined && {
          lastScan: { scannedAt: scan.scannedAt, revision: scan.revision, objects: scan.objects },
        }),
      };
    },
    failover: () => ({ setting: keys.failover, etag: keys.failoverEtag }),
    setFailover: (setting, etag) => keys.setFailover(setting, etag),
    cluster() {
      if (deps.cluster === undefined)
        throw new BrokerError(
          'NOT_CLUSTERED',
          'this broker keeps its state in its own file and has no peers; add `cluster` and `etcd` to its config to share it (docs/deploy.md)',
        );
      return deps.cluster();
    },
  };
}

function clusterSummary(view: ClusterView): NonNullable<AdminStatus['cluster']> {
  return { etcdReachable: view.etcd.reachable, converged: view.converged, members: view.members.length };
}

/** The stages a version passes after a rotation, in order. */
const ROTATION_STAGES = ['re-seeding', 'awaiting-scan', 'needed', 'unclear', 'retirable'] as const;

function leastAdvanced(versions: readonly VersionJudgement[]): RotationView['stage'] {
  for (const stage of ROTATION_STAGES) if (versions.some(version => version.stage === stage)) return stage;
  return 'steady';
}
