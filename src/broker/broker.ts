// The broker: Status, Encrypt and Decrypt over the KEK interface. Key-set changes live in
// KeyLifecycle, backend health in HealthMonitor; src/grpc and src/admin adapt this to wires.
import type { KekBackend } from '../backends/kek.ts';
import type { BrokerConfig } from '../config/schema.ts';
import { BrokerError, toBrokerError } from '../errors.ts';
import type { Logger } from '../log.ts';
import { Metrics, type KeySet } from '../metrics.ts';
import { partOfDeadline, remainingMs, startDeadline, withSignal, type Deadline } from '../deadline.ts';
import {
  decodeEnvelope,
  encodeEnvelope,
  headerAad,
  MAX_CIPHERTEXT_BYTES,
  type ParsedEnvelope,
} from './envelope.ts';
import { HealthMonitor } from './health.ts';
import type { WriteKey } from './key-id.ts';
import { KeyLifecycle } from './key-lifecycle.ts';
import { RotationWatch } from './rotation-watch.ts';
import type { StateStore } from './state-store.ts';

export const KMS_API_VERSION = 'v2';
/** Wraps beyond the first travel in annotations `<backend><suffix>` (lowercase FQDNs). */
export const WRAP_ANNOTATION_SUFFIX = '.wrap.kms-broker.io';

export interface BrokerDeps {
  readonly config: BrokerConfig;
  /** Backends by name, not yet opened. */
  readonly backends: ReadonlyMap<string, KekBackend>;
  readonly stateStore: StateStore;
  readonly logger: Logger;
  readonly metrics?: Metrics;
  readonly now?: () => Date;
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

export interface CallContext {
  readonly uid: string;
  /** The caller's deadline in epoch ms, when it sent one. */
  readonly deadline?: number | undefined;
}

export interface DecryptInput {
  readonly ciphertext: Buffer;
  readonly keyId: string;
  readonly annotations: Readonly<Record<string, Buffer>>;
}

export class Broker {
  readonly keys: KeyLifecycle;
  readonly health: HealthMonitor;
  readonly rotationWatch: RotationWatch;
  readonly metrics: Metrics;
  readonly startedAt = new Date();
  readonly #config: BrokerConfig;
  readonly #backends: ReadonlyMap<string, KekBackend>;
  readonly #logger: Logger;
  /** key_ids whose seeds went out without some backends' wraps, and which backends. */
  readonly #thinSeeds = new Map<string, string[]>();
  #rebalancing = false;

  private constructor(deps: BrokerDeps, keys: KeyLifecycle, metrics: Metrics) {
    this.#config = deps.config;
    this.#backends = deps.backends;
    this.#logger = deps.logger;
    this.keys = keys;
    this.metrics = metrics;
    this.health = new HealthMonitor(
      [...deps.backends.values()],
      { ...deps.config.health, writeVersion: backend => keys.writeVersion(backend)?.version },
      deps.logger,
      metrics,
    );
    this.health.onChange(() => void this.#rebalance());
    this.rotationWatch = new RotationWatch({
      backends: [...deps.backends.values()],
      writeVersion: backend => keys.writeVersion(backend),
      adopt: (backend, info) => keys.adopt(backend, info),
      logger: deps.logger,
    });
    metrics.keySetFrom(() => this.#keySet());
  }

  /** Opens every backend, reconciles the state file with what they hold, and starts probing. */
  static async start(deps: BrokerDeps): Promise<Broker> {
    const now = deps.now ?? (() => new Date());
    // Process metrics too (resident memory, event-loop delay, GC): what an operator reads
    // first when calls slow down, and what `npm run bench` reads during the decrypt storm.
    const metrics = deps.metrics ?? new Metrics({ defaultMetrics: true });
    try {
      for (const backend of deps.backends.values()) await backend.open();
      const keys = await KeyLifecycle.open({
        config: deps.config,
        backends: deps.backends,
        store: deps.stateStore,
        logger: deps.logger,
        now,
        onStateWriteFailure: () => metrics.stateWriteFailed(),
      });
      const broker = new Broker(deps, keys, metrics);
      keys.start();
      broker.health.start();
      broker.rotationWatch.start();
      deps.logger.info({ keyId: keys.current.keyId, backends: [...deps.backends.keys()] }, 'broker started');
      return broker;
    } catch (error) {
      // Also those whose open() failed half-way (a refused login leaves HTTP agents behind).
      await Promise.allSettled([...deps.backends.values()].map(backend => backend.close()));
      throw error;
    }
  }

  status(): StatusResult {
    const { keyId, writeKeys, wrap } = this.keys.current;
    return {
      version: KMS_API_VERSION,
      healthz: this.health.healthz(
        writeKeys.map(key => key.backend),
        wrap,
      ),
      keyId,
    };
  }

  async encrypt(plaintext: Buffer, context: CallContext): Promise<EncryptResult> {
    const started = performance.now();
    // One read: the key_id returned is the one of the versions that wrap, even if a
    // rotation lands while the wraps are in flight.
    const { keyId, writeKeys } = this.keys.current;
    const deadline = startDeadline(this.#config.timeouts.callMs, context.deadline);
    try {
      // Backends whose breaker is open are left out at once (a thin envelope now beats a
      // full one after the deadline); only when every writer is open are they all tried.
      const available = writeKeys.filter(key => this.health.health(key.backend)?.breaker !== 'open');
      const targets = available.length > 0 ? available : writeKeys;
      const results = await Promise.allSettled(targets.map(key => this.#wrap(key, plaintext, deadline)));
      const wrapped = results.flatMap((result, index) =>
        result.status === 'fulfilled' ? [{ key: targets[index] as WriteKey, envelope: result.value }] : [],
      );
      const [first, ...others] = wrapped;
      if (first === undefined) throw firstError(results);
      if (wrapped.length < writeKeys.length) {
        this.metrics.underReplicated();
        const missing = writeKeys.filter(key => !wrapped.some(w => w.key === key)).map(key => key.backend);
        // Merge: with three or more backends, seeds of one key_id may miss different ones.
        this.#thinSeeds.set(keyId, [...new Set([...(this.#thinSeeds.get(keyId) ?? []), ...missing])]);
        this.#logger.warn({ uid: context.uid, missing }, 'envelope is under-replicated');
      }
      const annotations = Object.fromEntries(
        others.map(({ key, envelope }) => [`${key.backend}${WRAP_ANNOTATION_SUFFIX}`, envelope]),
      );
      this.#logCall('encrypt', context, started, {
        backend: wrapped.map(w => w.key.backend).join(','),
        keyVersion: first.key.version,
      });
      return { ciphertext: first.envelope, keyId, annotations };
    } catch (error) {
      throw this.#logFailure('encrypt', context, started, error);
    } finally {
      deadline.dispose();
    }
  }

  /**
   * Tries every wrap the envelope carries (the ciphertext, then annotations), healthy
   * backends first in failover order, inside one deadline; the first success wins.
   */
  async decrypt(input: DecryptInput, context: CallContext): Promise<Buffer> {
    const started = performance.now();
    const deadline = startDeadline(this.#config.timeouts.callMs, context.deadline);
    try {
      const candidates = this.#candidates(input);
      const failures: BrokerError[] = [];
      for (const [index, candidate] of candidates.entries()) {
        if (deadline.signal.aborted) break;
        // A backend that hangs must not spend the whole budget while another wrap could
        // answer: each try gets an equal share of what is left among the untried wraps.
        const untried = candidates.length - index;
        const part = untried > 1 ? partOfDeadline(deadline, remainingMs(deadline) / untried) : undefined;
        try {
          const plaintext = await this.#unwrap(candidate, part ?? deadline);
          this.keys.recordDecrypt(candidate.header.backend, candidate.header.keyVersion);
          this.#logCall('decrypt', context, started, {
            backend: candidate.header.backend,
            keyVersion: candidate.header.keyVersion,
          });
          return plaintext;
        } catch (error) {
          failures.push(toBrokerError(error));
        } finally {
          part?.dispose();
        }
      }
      throw (
        mostUseful(failures) ??
        new BrokerError('DEADLINE_EXCEEDED', 'the call did not complete within its deadline')
      );
    } catch (error) {
      throw this.#logFailure('decrypt', context, started, error);
    } finally {
      deadline.dispose();
    }
  }

  /** key_ids whose seeds lack some backends' wraps since start (readable only through the others). */
  get underReplicatedKeyIds(): readonly string[] {
    return [...this.#thinSeeds.keys()];
  }

  /**
   * After every health change and probe round: with wrap: first, writes go to the first
   * backend of the order that is healthy (one that was down must stay closed for the
   * hysteresis before it takes writes back); with wrap: all, a seed that went out without
   * some wraps is replaced (new generation, so the apiserver re-seeds) once the missing
   * backends have been healthy for the hysteresis.
   */
  async #rebalance(): Promise<void> {
    if (this.#rebalancing) return;
    this.#rebalancing = true;
    try {
      const { order } = this.keys.failover;
      const { keyId, wrap, writeKeys } = this.keys.current;
      const hysteresisMs = this.#config.failover.hysteresisMs;
      if (wrap === 'first') {
        const current = writeKeys[0]?.backend;
        const desired = order.find(name =>
          name === current
            ? this.health.health(name)?.healthy === true
            : this.health.closedFor(name, hysteresisMs),
        );
        if (desired !== undefined && desired !== current) {
          const currentDown = current !== undefined && this.health.health(current)?.healthy !== true;
          await this.keys.switchWriter(
            desired,
            currentDown ? `${current} is unhealthy` : `${desired} is healthy again`,
          );
        }
        return;
      }
      const missing = this.#thinSeeds.get(keyId);
      if (missing !== undefined && missing.every(name => this.health.closedFor(name, hysteresisMs))) {
        await this.keys.bumpGeneration(`heal an under-replicated seed: ${missing.join(', ')} healthy again`);
      }
    } catch (error) {
      this.#logger.error({ code: toBrokerError(error).code }, 'could not rebalance writes');
    } finally {
      this.#rebalancing = false;
    }
  }

  /** Each backend's name and kind, in configuration order. */
  backendInfo(): { name: string; type: string }[] {
    return [...this.#backends.values()].map(backend => ({ name: backend.name, type: backend.type }));
  }

  async close(): Promise<void> {
    this.health.stop();
    this.rotationWatch.stop();
    await this.keys.stop();
    await Promise.allSettled([...this.#backends.values()].map(backend => backend.close()));
  }

  async #wrap(key: WriteKey, plaintext: Buffer, deadline: Deadline): Promise<Buffer> {
    const backend = this.#backend(key.backend);
    const aad = headerAad({ backend: backend.name, keyVersion: key.version, mechanism: backend.mechanism });
    const wrapped = await this.#call(
      backend,
      'wrap',
      backend.wrap({ plaintext, keyVersion: key.version, aad, deadline }),
      deadline.signal,
    );
    const envelope = encodeEnvelope(aad, wrapped);
    if (envelope.length > MAX_CIPHERTEXT_BYTES) {
      throw new BrokerError(
        'INTERNAL',
        `envelope of ${envelope.length} bytes exceeds the apiserver's ${MAX_CIPHERTEXT_BYTES}-byte limit`,
      );
    }
    return envelope;
  }

  async #unwrap(envelope: ParsedEnvelope, deadline: Deadline): Promise<Buffer> {
    const { backend: name, keyVersion, mechanism } = envelope.header;
    const backend = this.#backends.get(name);
    if (backend === undefined) {
      throw new BrokerError(
        'UNKNOWN_BACKEND',
        `the ciphertext was wrapped by backend '${name}', which is not configured`,
      );
    }
    let version = this.keys.version(name, keyVersion);
    if (version === undefined && (await this.keys.refreshVersions()))
      version = this.keys.version(name, keyVersion);
    if (version === undefined)
      throw new BrokerError('UNKNOWN_KEY_VERSION', `backend '${name}' holds no key version '${keyVersion}'`);
    if (version.state === 'retired') {
      throw new BrokerError(
        'KEY_VERSION_RETIRED',
        `key version '${keyVersion}' of backend '${name}' is retired; restore it to read this data`,
      );
    }
    return this.#call(
      backend,
      'unwrap',
      backend.unwrap({ wrapped: envelope.wrapped, keyVersion, mechanism, aad: envelope.aad, deadline }),
      deadline.signal,
    );
  }

  /** The envelope's wraps, healthy backends first, each group in failover order. */
  #candidates(input: DecryptInput): ParsedEnvelope[] {
    const envelopes = [decodeEnvelope(input.ciphertext)];
    for (const [key, value] of Object.entries(input.annotations)) {
      if (!key.endsWith(WRAP_ANNOTATION_SUFFIX)) continue;
      const envelope = decodeEnvelope(value);
      if (`${envelope.header.backend}${WRAP_ANNOTATION_SUFFIX}` !== key) {
        throw new BrokerError('INVALID_CIPHERTEXT', `annotation ${key} carries a wrap of another backend`);
      }
      envelopes.push(envelope);
    }
    const { order } = this.keys.failover;
    const rank = (envelope: ParsedEnvelope) => {
      const position = order.indexOf(envelope.header.backend);
      const healthy = this.health.health(envelope.header.backend)?.healthy === true;
      return (healthy ? 0 : 1000) + (position < 0 ? 100 : position);
    };
    return envelopes
      .map((envelope, index) => ({ envelope, index }))
      .sort((a, b) => rank(a.envelope) - rank(b.envelope) || a.index - b.index)
      .map(({ envelope }) => envelope);
  }

  #backend(name: string): KekBackend {
    const backend = this.#backends.get(name);
    if (backend === undefined)
      throw new BrokerError('UNKNOWN_BACKEND', `backend '${name}' is not configured`);
    return backend;
  }

  /** Runs a backend call under the deadline, feeding health and metrics with its outcome. */
  async #call<T>(backend: KekBackend, operation: string, call: Promise<T>, signal: AbortSignal): Promise<T> {
    const started = performance.now();
    try {
      const result = await withSignal(call, signal);
      this.health.record(backend.name, true);
      this.metrics.backendCall(backend.name, operation, 'ok', (performance.now() - started) / 1000);
      return result;
    } catch (error) {
      const brokerError = toBrokerError(error);
      this.metrics.backendCall(
        backend.name,
        operation,
        brokerError.code,
        (performance.now() - started) / 1000,
      );
      if (brokerError.code === 'BACKEND_UNAVAILABLE' || brokerError.code === 'DEADLINE_EXCEEDED') {
        this.health.record(backend.name, false, brokerError.causeName ?? brokerError.code);
      }
      throw brokerError;
    }
  }

  /** The version each backend writes with, in configuration order. */
  writeVersions(): { backend: string; version: string }[] {
    return [...this.#backends.keys()].flatMap(backend => {
      const version = this.keys.writeVersion(backend);
      return version === undefined ? [] : [{ backend, version: version.version }];
    });
  }

  #keySet(): KeySet {
    return { keyId: this.keys.current.keyId, writeVersions: this.writeVersions() };
  }

  #logCall(op: string, context: CallContext, started: number, fields: Record<string, string>): void {
    this.#logger.info(
      { op, uid: context.uid, ms: round(performance.now() - started), outcome: 'ok', ...fields },
      'kms call',
    );
  }

  #logFailure(op: string, context: CallContext, started: number, error: unknown): BrokerError {
    const brokerError = toBrokerError(error);
    this.#logger.warn(
      {
        op,
        uid: context.uid,
        ms: round(performance.now() - started),
        outcome: brokerError.code,
        cause: brokerError.causeName,
        err: brokerError.message,
      },
      'kms call failed',
    );
    return brokerError;
  }
}

function firstError(results: readonly PromiseSettledResult<unknown>[]): BrokerError {
  const failures = results.flatMap(result =>
    result.status === 'rejected' ? [toBrokerError(result.reason)] : [],
  );
  return mostUseful(failures) ?? new BrokerError('INTERNAL', 'no backend wrapped the seed');
}

/**
 * When every wrap failed: a transient failure (which the apiserver retries) says more than
 * a permanent one of a backend that happens to be down; otherwise the first failure.
 */
function mostUseful(failures: readonly BrokerError[]): BrokerError | undefined {
  return (
    failures.find(error => error.code === 'BACKEND_UNAVAILABLE' || error.code === 'DEADLINE_EXCEEDED') ??
    failures[0]
  );
}

function round(ms: number): number {
  return Math.round(ms * 100) / 100;
}
