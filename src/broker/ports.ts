// What the adapters see of the broker: src/grpc a KMS service of three calls (plus the
// decoded-wrap entry of KMS v1), src/admin an admin service. Neither reaches the key set,
// the health monitor or the state store behind them.
import type { BreakerState } from '../metrics/metrics.ts';
import type { VersionJudgement, VersionStage } from './keys/retirement.ts';
import type { FailoverSetting } from './state/state-schema.ts';
import type { UsageScan } from './usage-scan.ts';

export { backendNameSchema } from '../backends/config-schema.ts';
export { failoverSettingSchema, type FailoverSetting } from './state/state-schema.ts';
export { usageScanSchema, type UsageScan } from './usage-scan.ts';
export type { VersionJudgement, VersionStage } from './keys/retirement.ts';
export type { ClusterMember, ClusterView } from './state/state-store.ts';
import type { ClusterView } from './state/state-store.ts';

export interface CallContext {
  readonly uid: string;
  /** The caller's deadline in epoch ms, when it sent one. */
  readonly deadline?: number | undefined;
}

export interface StatusResult {
  readonly version: string;
  readonly healthz: string;
  readonly keyId: string;
}

export interface EncryptResult {
  readonly ciphertext: Buffer;
  readonly keyId: string;
  readonly annotations: Readonly<Record<string, Buffer>>;
}

export interface DecryptInput {
  readonly ciphertext: Buffer;
  readonly keyId: string;
  readonly annotations: Readonly<Record<string, Buffer>>;
}

export interface KmsService {
  /** Answered from memory: never calls a backend. */
  status(): StatusResult;
  encrypt(plaintext: Buffer, context: CallContext): Promise<EncryptResult>;
  /** KMS v2: the ciphertext and its wrap annotations. */
  decrypt(input: DecryptInput, context: CallContext): Promise<Buffer>;
  /** KMS v1: the wraps of a wrap set, in the order they were written (each an encoded envelope). */
  decryptWraps(wraps: readonly Buffer[], context: CallContext): Promise<Buffer>;
}

export interface AdminStatus {
  readonly keyId: string;
  readonly healthz: string;
  readonly kmsApiVersion: string;
  readonly writeVersions: Readonly<Record<string, string>>;
  readonly failover: FailoverSetting;
  /** Backends whose breaker is open. */
  readonly degraded: readonly string[];
  /** key_ids whose seeds went out without some backends' wraps (since start). */
  readonly underReplicatedKeyIds: readonly string[];
  readonly uptimeSeconds: number;
  /** With a shared state: whether etcd answers and every broker advertises the committed key_id. */
  readonly cluster?: {
    readonly etcdReachable: boolean;
    readonly converged: boolean;
    readonly members: number;
  };
}

export interface BackendView {
  readonly name: string;
  readonly type: string;
  readonly healthy: boolean;
  readonly breaker: BreakerState;
  readonly reason?: string;
  readonly lastProbeAt?: string;
  readonly lastProbeMs?: number;
  readonly errors: Readonly<Record<string, number>>;
  readonly writeVersion?: string;
  /** An escrow key: wraps every seed, never unwraps (its wraps open offline, with the shares). */
  readonly writeOnly?: true;
}

export interface VersionView {
  readonly version: string;
  readonly role: 'write' | 'active' | 'retired';
  readonly createdAt: string;
  readonly lastDecryptAt?: string;
  readonly decryptCount: number;
  readonly decryptsSinceStart: number;
}

export type VersionState = 'active' | 'retired';

/** What stored data needs of every key version, by the newest usage scan. */
export interface UsageView {
  readonly lastScan: UsageScan | undefined;
  readonly versions: readonly VersionJudgement[];
}

/**
 * Where a rotation stands, for dashboards: the versions that stopped writing and are not
 * retired yet, each with its stage, and the least advanced of them as the whole's stage
 * (`steady` when there is none).
 */
export interface RotationView {
  readonly keyId: string;
  readonly stage: 'steady' | Exclude<VersionStage, 'write' | 'retired'>;
  readonly versions: readonly VersionJudgement[];
  readonly lastScan?: { readonly scannedAt: string; readonly revision: string; readonly objects: number };
}

export interface AdminService {
  status(): AdminStatus;
  backends(): BackendView[];
  keys(): Record<string, VersionView[]>;
  rotate(backend: string): Promise<{ keyId: string; version: string }>;
  retire(
    backend: string,
    version: string,
    options: { force: boolean },
  ): Promise<{ before: VersionState; after: VersionState }>;
  restore(backend: string, version: string): Promise<{ before: VersionState; after: VersionState }>;
  /** Keeps a usage scan of the cluster's etcd (SCAN_OUTDATED when a newer one is kept). */
  recordScan(scan: UsageScan): Promise<void>;
  usage(): UsageView;
  rotation(): RotationView;
  failover(): { setting: FailoverSetting; etag: string };
  /** The brokers sharing this one's state, and whether they agree (NOT_CLUSTERED without `cluster`). */
  cluster(): ClusterView;
  /** Changes the failover setting if `etag` still names the current one (PRECONDITION_FAILED otherwise). */
  setFailover(
    setting: FailoverSetting,
    etag: string,
  ): Promise<{ before: FailoverSetting; after: FailoverSetting; keyId: string }>;
}
