// Prometheus metrics with bounded labels only: KMS method, backend name, operation and
// outcome (an error catalog code). Never error text, never a raw key_id.
import { createHash } from 'node:crypto';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

const latencyBuckets = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

export interface KeySet {
  readonly keyId: string;
  readonly writeVersions: readonly { backend: string; version: string }[];
}

/** What the newest usage scan says of the versions a rotation left behind (GET /v1/rotation). */
export interface RotationEvidence {
  readonly lastScan?: { readonly scannedAt: string };
  readonly versions: readonly {
    readonly backend: string;
    readonly version: string;
    readonly stage: string;
    readonly neededBy?: { readonly objects: number };
  }[];
}

/** What the cluster gauges read of the shared state's view. */
export interface ClusterHealth {
  readonly members: readonly unknown[];
  readonly converged: boolean;
  readonly etcd: { readonly reachable: boolean };
}

/** The states of a backend's circuit breaker (src/broker/health/breaker.ts). */
export const BREAKER_STATES = ['closed', 'half-open', 'open'] as const;
export type BreakerState = (typeof BREAKER_STATES)[number];
const breakerValue: Record<BreakerState, number> = { closed: 0, 'half-open': 1, open: 2 };

export class Metrics {
  readonly registry = new Registry();
  readonly #kmsRequests: Counter<'method' | 'outcome'>;
  readonly #kmsLatency: Histogram<'method'>;
  readonly #backendCalls: Counter<'backend' | 'operation' | 'outcome'>;
  readonly #backendLatency: Histogram<'backend' | 'operation'>;
  readonly #breaker: Gauge<'backend'>;
  #keySetSource: (() => KeySet) | undefined;
  #rotationSource: (() => RotationEvidence) | undefined;
  #clusterSource: (() => ClusterHealth) | undefined;
  readonly #lastProbeSuccess = new Map<string, number>();
  readonly #stateWriteFailures: Counter;
  readonly #underReplicated: Counter;

  constructor(options: { defaultMetrics?: boolean } = {}) {
    const registers = [this.registry];
    this.#kmsRequests = new Counter({
      name: 'kms_broker_kms_requests_total',
      help: 'KMS gRPC requests by method and outcome (ok or an error code).',
      labelNames: ['method', 'outcome'],
      registers,
    });
    this.#kmsLatency = new Histogram({
      name: 'kms_broker_kms_request_duration_seconds',
      help: 'KMS gRPC request latency by method.',
      labelNames: ['method'],
      buckets: latencyBuckets,
      registers,
    });
    this.#backendCalls = new Counter({
      name: 'kms_broker_backend_calls_total',
      help: 'Calls to key backends by backend, operation and outcome.',
      labelNames: ['backend', 'operation', 'outcome'],
      registers,
    });
    this.#backendLatency = new Histogram({
      name: 'kms_broker_backend_call_duration_seconds',
      help: 'Latency of calls to key backends.',
      labelNames: ['backend', 'operation'],
      buckets: latencyBuckets,
      registers,
    });
    this.#breaker = new Gauge({
      name: 'kms_broker_backend_breaker_state',
      help: 'Circuit breaker state per backend: 0 closed, 1 half-open, 2 open.',
      labelNames: ['backend'],
      registers,
    });
    const keySet = () => this.#keySetSource?.();
    new Gauge({
      name: 'kms_broker_write_key_version',
      help: 'The key version each backend writes with (numeric versions only).',
      labelNames: ['backend'],
      registers,
      collect() {
        this.reset();
        for (const { backend, version } of keySet()?.writeVersions ?? []) {
          const numeric = Number(version);
          if (Number.isFinite(numeric)) this.set({ backend }, numeric);
        }
      },
    });
    new Gauge({
      name: 'kms_broker_key_id_info',
      help: 'The current key_id, as the first 12 hex digits of its SHA-256.',
      labelNames: ['key_id_hash'],
      registers,
      collect() {
        this.reset();
        const keyId = keySet()?.keyId;
        if (keyId !== undefined)
          this.set({ key_id_hash: createHash('sha256').update(keyId).digest('hex').slice(0, 12) }, 1);
      },
    });
    const cluster = () => this.#clusterSource?.();
    const clusterGauge = (name: string, help: string, value: (view: ClusterHealth) => number) =>
      new Gauge({
        name,
        help,
        registers,
        collect() {
          this.reset();
          const view = cluster();
          if (view !== undefined) this.set(value(view));
        },
      });
    clusterGauge(
      'kms_broker_cluster_members',
      'Brokers registered under the shared state (live leases), this one included; absent without `cluster`.',
      view => view.members.length,
    );
    clusterGauge(
      'kms_broker_cluster_converged',
      'Whether every registered broker advertises the committed key_id (1) or not (0); absent without `cluster`.',
      view => (view.converged ? 1 : 0),
    );
    clusterGauge(
      'kms_broker_cluster_etcd_reachable',
      "Whether the shared state's etcd answered this broker's last call (1) or not (0): while 0, admin changes are refused.",
      view => (view.etcd.reachable ? 1 : 0),
    );
    const rotation = () => this.#rotationSource?.();
    new Gauge({
      name: 'kms_broker_usage_scan_timestamp_seconds',
      help: 'When the newest recorded usage scan of etcd began (absent while none is recorded).',
      registers,
      collect() {
        this.reset();
        const scannedAt = rotation()?.lastScan?.scannedAt;
        if (scannedAt !== undefined) this.set(Date.parse(scannedAt) / 1000);
      },
    });
    new Gauge({
      name: 'kms_broker_old_key_version_needed_objects',
      help: 'Per key version that stopped writing and is not retired: stored objects the newest usage scan shows needing it (no other readable wrap); -1 while no scan counts for it yet.',
      labelNames: ['backend', 'version'],
      registers,
      collect() {
        this.reset();
        for (const { backend, version, stage, neededBy } of rotation()?.versions ?? []) {
          const counted = stage === 'needed' || stage === 'retirable' || stage === 'unclear';
          this.set({ backend, version }, counted ? (neededBy?.objects ?? 0) : -1);
        }
      },
    });
    const lastProbe = this.#lastProbeSuccess;
    new Gauge({
      name: 'kms_broker_backend_seconds_since_probe_success',
      help: 'Seconds since the last successful health probe of each backend.',
      labelNames: ['backend'],
      registers,
      collect() {
        for (const [backend, at] of lastProbe) this.set({ backend }, (Date.now() - at) / 1000);
      },
    });
    this.#stateWriteFailures = new Counter({
      name: 'kms_broker_state_write_failures_total',
      help: 'State file writes that failed.',
      registers,
    });
    this.#underReplicated = new Counter({
      name: 'kms_broker_under_replicated_envelopes_total',
      help: 'Envelopes written with wrap: all that lack the wrap of at least one backend.',
      registers,
    });
    if (options.defaultMetrics === true)
      collectDefaultMetrics({ register: this.registry, prefix: 'kms_broker_' });
  }

  kmsRequest(method: string, outcome: string, seconds: number): void {
    this.#kmsRequests.inc({ method, outcome });
    this.#kmsLatency.observe({ method }, seconds);
  }

  backendCall(backend: string, operation: string, outcome: string, seconds: number): void {
    this.#backendCalls.inc({ backend, operation, outcome });
    this.#backendLatency.observe({ backend, operation }, seconds);
  }

  breakerState(backend: string, state: BreakerState): void {
    this.#breaker.set({ backend }, breakerValue[state]);
  }

  probeSucceeded(backend: string, at: number): void {
    this.#lastProbeSuccess.set(backend, at);
  }

  /** Where scrapes read the current key_id and write versions from. */
  keySetFrom(source: () => KeySet): void {
    this.#keySetSource = source;
  }

  /** Where scrapes read what the newest usage scan says of the old key versions. */
  rotationFrom(source: () => RotationEvidence): void {
    this.#rotationSource = source;
  }

  /** Where scrapes read the shared state's members and convergence from (brokers with `cluster`). */
  clusterFrom(source: () => ClusterHealth): void {
    this.#clusterSource = source;
  }

  stateWriteFailed(): void {
    this.#stateWriteFailures.inc();
  }

  underReplicated(): void {
    this.#underReplicated.inc();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }
}
