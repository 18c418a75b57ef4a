// Prometheus metrics with bounded labels only: KMS method, backend name, operation and
// outcome (an error catalog code). Never error text, never a raw key_id. Names follow
// Prometheus' conventions: base units (seconds), counters ending in `_total`, timestamps
// rather than "seconds since", one series per state, and the standard `process_*` and
// `nodejs_*` names for the process, so that stock dashboards read them. docs/metrics.md
// lists every metric; test/unit/metrics-doc.test.ts keeps that list true.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { buildInfo } from './build-info.ts';
import {
  registerStateGauges,
  type ClusterHealth,
  type KeySet,
  type RotationEvidence,
  type ScrapeSources,
  type StatusEvidence,
} from './state-gauges.ts';

export type { ClusterHealth, KeySet, RotationEvidence, StatusEvidence } from './state-gauges.ts';

const latencyBuckets = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

/** The states of a backend's circuit breaker (src/broker/health/breaker.ts). */
export const BREAKER_STATES = ['closed', 'half-open', 'open'] as const;
export type BreakerState = (typeof BREAKER_STATES)[number];

export class Metrics {
  readonly registry = new Registry();
  readonly #kmsRequests: Counter<'method' | 'outcome'>;
  readonly #kmsLatency: Histogram<'method'>;
  readonly #backendCalls: Counter<'backend' | 'operation' | 'outcome'>;
  readonly #backendLatency: Histogram<'backend' | 'operation'>;
  readonly #breaker: Gauge<'backend' | 'state'>;
  readonly #backendUp: Gauge<'backend'>;
  readonly #lastProbeSuccess: Gauge<'backend'>;
  readonly #stateWriteFailures: Counter;
  readonly #underReplicated: Counter;
  readonly #sources: ScrapeSources = {};

  constructor(options: { defaultMetrics?: boolean } = {}) {
    const registers = [this.registry];
    const build = buildInfo();
    new Gauge({
      name: 'kms_broker_build_info',
      help: 'Always 1; its labels say which release runs: version, nodejs_version and, when known, commit.',
      labelNames: ['version', 'nodejs_version', 'commit'],
      registers,
    }).set({ ...build }, 1);
    this.#kmsRequests = new Counter({
      name: 'kms_broker_kms_requests_total',
      help: 'KMS gRPC requests by method and outcome (ok or an error code).',
      labelNames: ['method', 'outcome'],
      registers,
    });
    this.#kmsLatency = new Histogram({
      name: 'kms_broker_kms_request_duration_seconds',
      help: 'KMS gRPC request latency by method, in seconds.',
      labelNames: ['method'],
      buckets: latencyBuckets,
      registers,
    });
    this.#backendCalls = new Counter({
      name: 'kms_broker_backend_calls_total',
      help: 'Calls to key backends by backend, operation and outcome (ok or an error code).',
      labelNames: ['backend', 'operation', 'outcome'],
      registers,
    });
    this.#backendLatency = new Histogram({
      name: 'kms_broker_backend_call_duration_seconds',
      help: 'Latency of calls to key backends, in seconds.',
      labelNames: ['backend', 'operation'],
      buckets: latencyBuckets,
      registers,
    });
    this.#breaker = new Gauge({
      name: 'kms_broker_backend_breaker_state',
      help: 'Circuit breaker state per backend: 1 for its current state (closed, half-open or open), 0 for the others.',
      labelNames: ['backend', 'state'],
      registers,
    });
    this.#backendUp = new Gauge({
      name: 'kms_broker_backend_up',
      help: 'Whether the last health probe of each backend succeeded (1) or failed (0); absent until the first probe ends.',
      labelNames: ['backend'],
      registers,
    });
    this.#lastProbeSuccess = new Gauge({
      name: 'kms_broker_backend_probe_last_success_timestamp_seconds',
      help: 'When the last successful health probe of each backend ended, in Unix seconds.',
      labelNames: ['backend'],
      registers,
    });
    this.#stateWriteFailures = new Counter({
      name: 'kms_broker_state_write_failures_total',
      help: 'State writes that failed (the change was undone in memory).',
      registers,
    });
    this.#underReplicated = new Counter({
      name: 'kms_broker_under_replicated_envelopes_total',
      help: 'Envelopes written with wrap: all that lack the wrap of at least one backend.',
      registers,
    });
    registerStateGauges(this.registry, this.#sources);
    // No prefix: `process_*` and `nodejs_*` are what stock Node.js dashboards query.
    if (options.defaultMetrics === true) collectDefaultMetrics({ register: this.registry });
  }

  kmsRequest(method: string, outcome: string, seconds: number): void {
    this.#kmsRequests.inc({ method, outcome });
    this.#kmsLatency.observe({ method }, seconds);
  }

  backendCall(backend: string, operation: string, outcome: string, seconds: number): void {
    this.#backendCalls.inc({ backend, operation, outcome });
    this.#backendLatency.observe({ backend, operation }, seconds);
  }

  breakerState(backend: string, current: BreakerState): void {
    for (const state of BREAKER_STATES) this.#breaker.set({ backend, state }, state === current ? 1 : 0);
  }

  /** A health probe ended; `at` is when, in epoch ms. */
  probed(backend: string, ok: boolean, at: number): void {
    this.#backendUp.set({ backend }, ok ? 1 : 0);
    if (ok) this.#lastProbeSuccess.set({ backend }, at / 1000);
  }

  /** Where scrapes read the current key_id and write versions from. */
  keySetFrom(source: () => KeySet): void {
    this.#sources.keySet = source;
  }

  /** Where scrapes read Status' health and the thin seeds from. */
  statusFrom(source: () => StatusEvidence): void {
    this.#sources.status = source;
  }

  /** Where scrapes read the rotation's stage and what the newest usage scan says of old versions. */
  rotationFrom(source: () => RotationEvidence): void {
    this.#sources.rotation = source;
  }

  /** Where scrapes read the shared state's members and convergence from (brokers with `cluster`). */
  clusterFrom(source: () => ClusterHealth): void {
    this.#sources.cluster = source;
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
