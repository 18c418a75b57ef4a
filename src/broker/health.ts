// Backend health, kept in memory so that Status never calls a backend. A background loop
// probes each backend cheaply (never a wrap), and the outcome of real calls feeds the same
// record, so an outage is seen at the first failed call, not only at the next probe.
import type { KekBackend } from '../backends/kek.ts';
import { toBrokerError } from '../errors.ts';
import type { Logger } from '../log.ts';
import type { Metrics } from '../metrics.ts';
import { callSignal } from './deadline.ts';

export interface BackendHealth {
  readonly healthy: boolean;
  /** A safe, short reason (an error code), never a backend's raw message. */
  readonly reason: string | undefined;
  readonly lastProbeAt: Date | undefined;
  readonly lastProbeMs: number | undefined;
  /** Failures since start by reason (error codes and PKCS#11/HTTP cause names: a bounded set). */
  readonly errors: Readonly<Record<string, number>>;
}

export class HealthMonitor {
  readonly #backends: readonly KekBackend[];
  readonly #intervalMs: number;
  readonly #logger: Logger;
  readonly #metrics: Metrics;
  readonly #health = new Map<string, BackendHealth>();
  #timer: NodeJS.Timeout | undefined;

  constructor(backends: readonly KekBackend[], intervalMs: number, logger: Logger, metrics: Metrics) {
    this.#backends = backends;
    this.#intervalMs = intervalMs;
    this.#logger = logger;
    this.#metrics = metrics;
    for (const backend of backends) {
      this.#health.set(backend.name, {
        healthy: true,
        reason: undefined,
        lastProbeAt: undefined,
        lastProbeMs: undefined,
        errors: {},
      });
      metrics.breakerState(backend.name, 'closed');
    }
  }

  /** Probes at once (so the first report is real, not assumed) and then every interval. */
  start(): void {
    if (this.#timer !== undefined) return;
    this.#timer = setInterval(() => void this.probeAll(), this.#intervalMs).unref();
    void this.probeAll();
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  async probeAll(): Promise<void> {
    await Promise.all(this.#backends.map(backend => this.#probe(backend)));
  }

  /** Records the outcome of a real call or a probe. */
  record(name: string, healthy: boolean, reason?: string): void {
    const previous = this.#health.get(name);
    if (previous === undefined) return;
    if (previous.healthy !== healthy) {
      this.#logger.warn(
        { backend: name, healthy, reason },
        healthy ? 'backend recovered' : 'backend unhealthy',
      );
      this.#metrics.breakerState(name, healthy ? 'closed' : 'open');
    }
    const errors =
      healthy || reason === undefined
        ? previous.errors
        : { ...previous.errors, [reason]: (previous.errors[reason] ?? 0) + 1 };
    this.#health.set(name, { ...previous, healthy, reason: healthy ? undefined : reason, errors });
  }

  health(name: string): BackendHealth | undefined {
    return this.#health.get(name);
  }

  /** Status `healthz`: "ok" only when every named (write) backend is healthy. */
  healthz(writeBackends: readonly string[]): string {
    const failing = writeBackends.filter(name => this.#health.get(name)?.healthy !== true);
    if (failing.length === 0) return 'ok';
    return `unhealthy backends: ${failing.map(name => `${name} (${this.#health.get(name)?.reason ?? 'unknown'})`).join(', ')}`;
  }

  async #probe(backend: KekBackend): Promise<void> {
    const started = performance.now();
    const signal = callSignal(Math.min(this.#intervalMs, 5000));
    let reason: string | undefined;
    try {
      await backend.probe(signal);
      this.#metrics.probeSucceeded(backend.name, Date.now());
    } catch (error) {
      const brokerError = toBrokerError(error);
      reason = brokerError.causeName ?? brokerError.code;
    }
    this.record(backend.name, reason === undefined, reason);
    const current = this.#health.get(backend.name);
    if (current !== undefined) {
      this.#health.set(backend.name, {
        ...current,
        lastProbeAt: new Date(),
        lastProbeMs: performance.now() - started,
      });
    }
  }
}
