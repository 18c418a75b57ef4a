// Backend health, kept in memory so that Status never calls a backend. A background loop
// probes each backend cheaply (never a wrap); at a slower interval it also unwraps a canary
// the backend wrapped once, proving that decryption (not just reachability) works. Probes
// and real calls feed one circuit breaker per backend, so an outage is seen at the first
// failed call, not only at the next probe.
import { randomBytes } from 'node:crypto';
import type { KekBackend } from '../../backends/kek.ts';
import { BrokerError, toBrokerError } from '../../errors.ts';
import type { Logger } from '../../log.ts';
import { startDeadline, type Deadline } from '../../deadline.ts';
import type { BreakerState, Metrics } from '../../metrics/metrics.ts';
import type { FailoverSetting } from '../state/state-schema.ts';
import { Breaker } from './breaker.ts';

export interface BackendHealth {
  readonly healthy: boolean;
  readonly breaker: BreakerState;
  /** A safe, short reason (an error code), never a backend's raw message. */
  readonly reason: string | undefined;
  readonly lastProbeAt: Date | undefined;
  readonly lastProbeMs: number | undefined;
  /** Failures since start by reason (error codes and PKCS#11/HTTP cause names: a bounded set). */
  readonly errors: Readonly<Record<string, number>>;
}

export interface HealthOptions {
  readonly probeIntervalMs: number;
  readonly canaryIntervalMs: number;
  readonly failureThreshold: number;
  readonly openCooldownMs: number;
  /** The version a backend writes with, for its canary. */
  readonly writeVersion: (backend: string) => string | undefined;
}

interface Record_ {
  readonly breaker: Breaker;
  reason: string | undefined;
  lastProbeAt: Date | undefined;
  lastProbeMs: number | undefined;
  errors: Record<string, number>;
  wasAvailable: boolean;
}

interface Canary {
  readonly version: string;
  readonly plaintext: Buffer;
  readonly wrapped: Buffer;
  checkedAt: number;
}

const CANARY_AAD = Buffer.from('kms-broker canary');
const PROBE_MIN_MS = 1000;
const PROBE_MAX_MS = 5000;

export class HealthMonitor {
  readonly #backends: readonly KekBackend[];
  readonly #options: HealthOptions;
  readonly #logger: Logger;
  readonly #metrics: Metrics;
  readonly #records = new Map<string, Record_>();
  readonly #canaries = new Map<string, Canary>();
  readonly #listeners: (() => void)[] = [];
  /** Probes in flight, by backend: a probe round joins one rather than piling up another. */
  readonly #probing = new Map<string, Promise<void>>();
  #timer: NodeJS.Timeout | undefined;

  constructor(backends: readonly KekBackend[], options: HealthOptions, logger: Logger, metrics: Metrics) {
    this.#backends = backends;
    this.#options = options;
    this.#logger = logger;
    this.#metrics = metrics;
    for (const backend of backends) {
      const breaker = new Breaker({
        failureThreshold: options.failureThreshold,
        openCooldownMs: options.openCooldownMs,
      });
      this.#records.set(backend.name, {
        breaker,
        reason: undefined,
        lastProbeAt: undefined,
        lastProbeMs: undefined,
        errors: {},
        wasAvailable: true,
      });
      metrics.breakerState(backend.name, 'closed');
    }
  }

  /** Probes at once (so the first report is measured, not assumed) and then every interval. */
  start(): void {
    if (this.#timer !== undefined) return;
    this.#timer = setInterval(() => void this.probeAll(), this.#options.probeIntervalMs).unref();
    void this.probeAll();
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** Called whenever a backend's breaker changes state, and after every probe round. */
  onChange(listener: () => void): void {
    this.#listeners.push(listener);
  }

  async probeAll(): Promise<void> {
    await Promise.all(this.#backends.map(backend => this.#probe(backend)));
    // Time passing matters too (write hysteresis), so listeners also hear of every round.
    for (const listener of this.#listeners) listener();
  }

  /** Records the outcome of a real call (or a probe): feeds the breaker. */
  record(name: string, ok: boolean, reason?: string, source: 'probe' | 'call' = 'call'): void {
    const record = this.#records.get(name);
    if (record === undefined) return;
    const before = record.breaker.state;
    if (ok) record.breaker.success();
    else record.breaker.failure(source);
    if (!ok && reason !== undefined) record.errors[reason] = (record.errors[reason] ?? 0) + 1;
    record.reason = ok ? undefined : (reason ?? record.reason);
    const after = record.breaker.state;
    if (after !== before) {
      this.#metrics.breakerState(name, after);
      const available = after !== 'open';
      if (available !== record.wasAvailable) {
        record.wasAvailable = available;
        this.#logger.warn(
          { backend: name, breaker: after, reason: record.reason },
          available ? 'backend recovered' : 'backend unhealthy',
        );
      }
      for (const listener of this.#listeners) listener();
    }
  }

  health(name: string): BackendHealth | undefined {
    const record = this.#records.get(name);
    if (record === undefined) return undefined;
    const breaker = record.breaker.state;
    return {
      healthy: breaker !== 'open',
      breaker,
      reason: breaker === 'closed' ? undefined : record.reason,
      lastProbeAt: record.lastProbeAt,
      lastProbeMs: record.lastProbeMs,
      errors: { ...record.errors },
    };
  }

  /** Whether a backend may take writes back: closed for at least `forMs`. */
  closedFor(name: string, forMs: number): boolean {
    const breaker = this.#records.get(name)?.breaker;
    return breaker !== undefined && breaker.state === 'closed' && breaker.closedForMs() >= forMs;
  }

  /**
   * Status `healthz`: "ok" when writes would succeed (with `all`, when at least one writer
   * is available), else the failing backends with their reasons.
   */
  healthz(writers: readonly string[], wrap: FailoverSetting['wrap']): string {
    const failing = writers.filter(name => this.health(name)?.healthy !== true);
    const writable = wrap === 'all' ? failing.length < writers.length : failing.length === 0;
    if (writable) return 'ok';
    return `unhealthy backends: ${failing.map(name => `${name} (${this.health(name)?.reason ?? 'unknown'})`).join(', ')}`;
  }

  #probe(backend: KekBackend): Promise<void> {
    let probe = this.#probing.get(backend.name);
    if (probe === undefined) {
      probe = this.#probeOnce(backend).finally(() => this.#probing.delete(backend.name));
      this.#probing.set(backend.name, probe);
    }
    return probe;
  }

  async #probeOnce(backend: KekBackend): Promise<void> {
    const started = performance.now();
    // A probe's budget does not shrink with a short interval: a busy backend is slow, not down.
    const deadline = startDeadline(
      Math.min(PROBE_MAX_MS, Math.max(PROBE_MIN_MS, this.#options.probeIntervalMs)),
    );
    let reason: string | undefined;
    let slow = false;
    try {
      await backend.probe(deadline);
      await this.#checkCanary(backend, deadline);
    } catch (error) {
      const brokerError = toBrokerError(error);
      reason = brokerError.causeName ?? brokerError.code;
      slow = brokerError.code === 'DEADLINE_EXCEEDED';
    } finally {
      deadline.dispose();
    }
    // A clear refusal opens the breaker at once; a timeout counts like a failed call, so
    // one slow answer under load does not take a backend out of the write set.
    this.record(backend.name, reason === undefined, reason, slow ? 'call' : 'probe');
    this.#metrics.probed(backend.name, reason === undefined, Date.now());
    const record = this.#records.get(backend.name);
    if (record !== undefined) {
      record.lastProbeAt = new Date();
      record.lastProbeMs = performance.now() - started;
    }
  }

  /**
   * Unwraps the backend's canary when it is due: a backend that still answers probes but can
   * no longer decrypt (revoked permission, a key disabled in the service) is not healthy.
   */
  async #checkCanary(backend: KekBackend, deadline: Deadline): Promise<void> {
    const version = this.#options.writeVersion(backend.name);
    // An escrow key cannot unwrap by design; its wrap needs nothing but the key in memory.
    if (version === undefined || backend.writeOnly === true) return;
    let canary = this.#canaries.get(backend.name);
    const now = Date.now();
    if (
      canary !== undefined &&
      canary.version === version &&
      now - canary.checkedAt < this.#options.canaryIntervalMs
    )
      return;
    if (canary?.version !== version) {
      const plaintext = randomBytes(32);
      const wrapped = await backend.wrap({ plaintext, keyVersion: version, aad: CANARY_AAD, deadline });
      canary = { version, plaintext, wrapped, checkedAt: 0 };
      this.#canaries.set(backend.name, canary);
    }
    const unwrapped = await backend.unwrap({
      wrapped: canary.wrapped,
      keyVersion: version,
      mechanism: backend.mechanism,
      aad: CANARY_AAD,
      deadline,
    });
    if (!unwrapped.equals(canary.plaintext)) {
      throw new BrokerError(
        'BACKEND_UNAVAILABLE',
        `backend ${backend.name} returned a wrong canary`,
        'CANARY_MISMATCH',
      );
    }
    canary.checkedAt = now;
  }
}
