// Backend health, kept in memory so that Status never calls a backend. A background loop
// probes each backend cheaply (never a wrap), and the outcome of real calls feeds the same
// record, so an outage is seen at the first failed call, not only at the next probe.
import type { KekBackend } from '../backends/kek.ts';
import { toBrokerError } from '../errors.ts';
import { callSignal } from './deadline.ts';
import type { Logger } from '../log.ts';

export interface BackendHealth {
  readonly healthy: boolean;
  /** A safe, short reason (an error code), never a backend's raw message. */
  readonly reason: string | undefined;
  readonly lastProbeAt: Date | undefined;
  readonly lastProbeMs: number | undefined;
}

export class HealthMonitor {
  readonly #backends: readonly KekBackend[];
  readonly #intervalMs: number;
  readonly #logger: Logger;
  readonly #health = new Map<string, BackendHealth>();
  #timer: NodeJS.Timeout | undefined;

  constructor(backends: readonly KekBackend[], intervalMs: number, logger: Logger) {
    this.#backends = backends;
    this.#intervalMs = intervalMs;
    this.#logger = logger;
    for (const backend of backends) {
      this.#health.set(backend.name, {
        healthy: true,
        reason: undefined,
        lastProbeAt: undefined,
        lastProbeMs: undefined,
      });
    }
  }

  start(): void {
    this.#timer ??= setInterval(() => void this.probeAll(), this.#intervalMs).unref();
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  async probeAll(): Promise<void> {
    await Promise.all(this.#backends.map(backend => this.#probe(backend)));
  }

  /** Records the outcome of a real call. */
  record(name: string, healthy: boolean, reason?: string): void {
    const previous = this.#health.get(name);
    if (previous === undefined) return;
    if (previous.healthy !== healthy) {
      this.#logger.warn(
        { backend: name, healthy, reason },
        healthy ? 'backend recovered' : 'backend unhealthy',
      );
    }
    this.#health.set(name, { ...previous, healthy, reason: healthy ? undefined : reason });
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
    } catch (error) {
      const brokerError = toBrokerError(error);
      reason = brokerError.causeName ?? brokerError.code;
    }
    const previous = this.#health.get(backend.name);
    this.record(backend.name, reason === undefined, reason);
    const current = this.#health.get(backend.name);
    if (previous !== undefined && current !== undefined) {
      this.#health.set(backend.name, {
        ...current,
        lastProbeAt: new Date(),
        lastProbeMs: performance.now() - started,
      });
    }
  }
}
