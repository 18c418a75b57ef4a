// The broker: Status, Encrypt and Decrypt over the KEK interface, the key registry, and
// rotation. It knows nothing of gRPC; src/grpc adapts it to the wire.
import type { KekBackend, KeyVersionInfo } from '../backends/kek.ts';
import type { BrokerConfig } from '../config/schema.ts';
import { BrokerError, toBrokerError } from '../errors.ts';
import type { Logger } from '../log.ts';
import { callSignal, withSignal } from './deadline.ts';
import { decodeEnvelope, encodeEnvelope, headerAad, MAX_CIPHERTEXT_BYTES } from './envelope.ts';
import { HealthMonitor } from './health.ts';
import { RotationWatch } from './rotation-watch.ts';
import { KeyRegistry, reconcileBackend } from './key-registry.ts';
import type { BrokerState, StateStore } from './state-store.ts';

export const KMS_API_VERSION = 'v2';

export interface BrokerDeps {
  readonly config: BrokerConfig;
  /** Backends by name, not yet opened. */
  readonly backends: ReadonlyMap<string, KekBackend>;
  readonly stateStore: StateStore;
  readonly logger: Logger;
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

/** How often a Decrypt for an unknown key version may re-list the backend's versions. */
const VERSION_REFRESH_MIN_INTERVAL_MS = 5000;
const STATE_WATCH_INTERVAL_MS = 1000;
/** Budget for key administration (listing, creating versions), which the apiserver does not wait on. */
const ADMIN_CALL_MS = 30000;

export class Broker {
  readonly #config: BrokerConfig;
  readonly #backends: ReadonlyMap<string, KekBackend>;
  readonly #store: StateStore;
  readonly #logger: Logger;
  readonly #now: () => Date;
  readonly #registry: KeyRegistry;
  readonly #health: HealthMonitor;
  readonly #rotationWatch: RotationWatch;
  #unwatch: (() => void) | undefined;
  #reloading: Promise<void> | undefined;
  #lastVersionRefresh = 0;
  #rotating: Promise<unknown> = Promise.resolve();

  private constructor(deps: BrokerDeps, registry: KeyRegistry, now: () => Date) {
    this.#config = deps.config;
    this.#backends = deps.backends;
    this.#store = deps.stateStore;
    this.#logger = deps.logger;
    this.#now = now;
    this.#registry = registry;
    this.#health = new HealthMonitor(
      [...deps.backends.values()],
      deps.config.health.probeIntervalMs,
      deps.logger,
    );
    this.#rotationWatch = new RotationWatch({
      backends: [...deps.backends.values()],
      writeVersion: backend => this.#registry.writeVersion(backend),
      adopt: (backend, info) => this.#adopt(backend, info),
      logger: deps.logger,
    });
  }

  /** Opens every backend, reconciles the state file with what they hold, and starts probing. */
  static async start(deps: BrokerDeps): Promise<Broker> {
    const now = deps.now ?? (() => new Date());
    const opened: KekBackend[] = [];
    try {
      for (const backend of deps.backends.values()) {
        await backend.open();
        opened.push(backend);
      }
      const stored = await deps.stateStore.load();
      const state = await reconcileAll(deps.backends, stored, now(), { create: true, logger: deps.logger });
      if (stored === undefined || state.changed) await deps.stateStore.save(state.state);
      const broker = new Broker(deps, new KeyRegistry(state.state, deps.config.failover.order), now);
      broker.#health.start();
      broker.#rotationWatch.start();
      broker.#unwatch = deps.stateStore.watch(() => void broker.reload(), STATE_WATCH_INTERVAL_MS);
      deps.logger.info(
        { keyId: broker.#registry.current.keyId, backends: [...deps.backends.keys()] },
        'broker started',
      );
      return broker;
    } catch (error) {
      await Promise.allSettled(opened.map(backend => backend.close()));
      throw error;
    }
  }

  status(): StatusResult {
    const { keyId } = this.#registry.current;
    return { version: KMS_API_VERSION, healthz: this.#health.healthz(this.#writeBackends()), keyId };
  }

  async encrypt(plaintext: Buffer, context: CallContext): Promise<EncryptResult> {
    const started = performance.now();
    // One read: the key_id returned is the one of the version that wraps, even if a
    // rotation lands while the wrap is in flight.
    const { keyId, writeKey } = this.#registry.current;
    const backend = this.#backend(writeKey.backend);
    const aad = headerAad({
      backend: backend.name,
      keyVersion: writeKey.version,
      mechanism: backend.mechanism,
    });
    const signal = callSignal(this.#config.timeouts.callMs, context.deadline);
    try {
      const wrapped = await this.#call(
        backend,
        withSignal(backend.wrap({ plaintext, keyVersion: writeKey.version, aad, signal }), signal),
      );
      const ciphertext = encodeEnvelope(aad, wrapped);
      if (ciphertext.length > MAX_CIPHERTEXT_BYTES) {
        throw new BrokerError(
          'INTERNAL',
          `envelope of ${ciphertext.length} bytes exceeds the apiserver's ${MAX_CIPHERTEXT_BYTES}-byte limit`,
        );
      }
      this.#logCall('encrypt', context, started, { backend: backend.name, keyVersion: writeKey.version });
      return { ciphertext, keyId, annotations: {} };
    } catch (error) {
      throw this.#logFailure('encrypt', context, started, error);
    }
  }

  async decrypt(input: DecryptInput, context: CallContext): Promise<Buffer> {
    const started = performance.now();
    try {
      const envelope = decodeEnvelope(input.ciphertext);
      const { backend: name, keyVersion, mechanism } = envelope.header;
      const backend = this.#backends.get(name);
      if (backend === undefined) {
        throw new BrokerError(
          'UNKNOWN_BACKEND',
          `the ciphertext was wrapped by backend '${name}', which is not configured`,
        );
      }
      let version = this.#registry.version(name, keyVersion);
      if (version === undefined && (await this.#refreshVersions()))
        version = this.#registry.version(name, keyVersion);
      if (version === undefined) {
        throw new BrokerError(
          'UNKNOWN_KEY_VERSION',
          `backend '${name}' holds no key version '${keyVersion}'`,
        );
      }
      if (version.state === 'retired') {
        throw new BrokerError(
          'KEY_VERSION_RETIRED',
          `key version '${keyVersion}' of backend '${name}' is retired; restore it to read this data`,
        );
      }
      const signal = callSignal(this.#config.timeouts.callMs, context.deadline);
      const plaintext = await this.#call(
        backend,
        withSignal(
          backend.unwrap({ wrapped: envelope.wrapped, keyVersion, mechanism, aad: envelope.aad, signal }),
          signal,
        ),
      );
      this.#logCall('decrypt', context, started, { backend: name, keyVersion });
      return plaintext;
    } catch (error) {
      throw this.#logFailure('decrypt', context, started, error);
    }
  }

  /** Creates a new key version in a backend and makes it the write version (key_id changes). */
  rotate(backendName: string): Promise<{ keyId: string; version: string }> {
    const backend = this.#backend(backendName);
    return this.#serialized(async () => {
      const created = await backend.createVersion(callSignal(ADMIN_CALL_MS));
      return this.#makeWriteVersion(backendName, created, 'key rotated');
    });
  }

  /** Adopts a version the service created itself (seen stable by the rotation watch). */
  #adopt(backendName: string, info: KeyVersionInfo): Promise<void> {
    return this.#serialized(async () => {
      await this.#makeWriteVersion(backendName, info, 'adopted a rotation done in the backend');
    });
  }

  async #makeWriteVersion(
    backend: string,
    info: KeyVersionInfo,
    message: string,
  ): Promise<{ keyId: string; version: string }> {
    const before = this.#registry.current.keyId;
    this.#registry.setWriteVersion(backend, info, this.#now());
    await this.#store.save(this.#registry.toState());
    const { keyId } = this.#registry.current;
    this.#logger.info({ backend, version: info.version, keyId }, message);
    if (keyId !== before) this.#logger.info({ keyId, previousKeyId: before }, 'key set changed');
    return { keyId, version: info.version };
  }

  /** Key-set changes run one at a time, so two never race to the same version number. */
  #serialized<T>(change: () => Promise<T>): Promise<T> {
    const run = this.#rotating.then(change);
    this.#rotating = run.catch(() => undefined);
    return run;
  }

  /** Re-reads the state file (after another process changed it) and re-lists versions. */
  reload(): Promise<void> {
    this.#reloading ??= (async () => {
      try {
        let stored = await this.#store.load();
        if (stored === undefined) {
          // The file vanished under a running broker (deleted by hand, a wiped folder): the
          // registry in memory is the better record, retired versions and all.
          stored = this.#registry.toState();
          await this.#store.save(stored);
          this.#logger.warn(
            { path: this.#config.state.path },
            'state file disappeared; rewrote it from memory',
          );
        }
        const result = await reconcileAll(this.#backends, stored, this.#now(), {
          create: false,
          logger: this.#logger,
        });
        const before = this.#registry.current.keyId;
        this.#registry.replace(result.state);
        if (result.changed) await this.#store.save(result.state);
        const after = this.#registry.current.keyId;
        if (before !== after) this.#logger.info({ keyId: after, previousKeyId: before }, 'key set changed');
      } catch (error) {
        const brokerError = toBrokerError(error);
        this.#logger.error(
          { code: brokerError.code, err: brokerError.message },
          'state reload failed; keeping the current key set',
        );
      } finally {
        this.#reloading = undefined;
      }
    })();
    return this.#reloading;
  }

  get health(): HealthMonitor {
    return this.#health;
  }

  get rotationWatch(): RotationWatch {
    return this.#rotationWatch;
  }

  async close(): Promise<void> {
    this.#health.stop();
    this.#rotationWatch.stop();
    this.#unwatch?.();
    await this.#reloading;
    await Promise.allSettled([...this.#backends.values()].map(backend => backend.close()));
  }

  #writeBackends(): string[] {
    return [this.#registry.current.writeKey.backend];
  }

  #backend(name: string): KekBackend {
    const backend = this.#backends.get(name);
    if (backend === undefined)
      throw new BrokerError('UNKNOWN_BACKEND', `backend '${name}' is not configured`);
    return backend;
  }

  /** Runs a backend call and feeds its outcome into the health record. */
  async #call<T>(backend: KekBackend, call: Promise<T>): Promise<T> {
    try {
      const result = await call;
      this.#health.record(backend.name, true);
      return result;
    } catch (error) {
      const brokerError = toBrokerError(error);
      if (brokerError.code === 'BACKEND_UNAVAILABLE' || brokerError.code === 'DEADLINE_EXCEEDED') {
        this.#health.record(backend.name, false, brokerError.causeName ?? brokerError.code);
      }
      throw brokerError;
    }
  }

  /** New versions may appear in a shared backend (another broker rotated): look, but rarely. */
  async #refreshVersions(): Promise<boolean> {
    const now = Date.now();
    if (now - this.#lastVersionRefresh < VERSION_REFRESH_MIN_INTERVAL_MS) return false;
    this.#lastVersionRefresh = now;
    await this.reload();
    return true;
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

async function reconcileAll(
  backends: ReadonlyMap<string, KekBackend>,
  stored: BrokerState | undefined,
  now: Date,
  options: { create: boolean; logger: Logger },
): Promise<{ state: BrokerState; changed: boolean }> {
  const state: BrokerState =
    stored === undefined ? { format: 1, generation: 0, backends: {} } : structuredClone(stored);
  let changed = false;
  for (const [name, backend] of backends) {
    const listed = await backend.listVersions(callSignal(ADMIN_CALL_MS));
    const merged = reconcileBackend(name, state.backends[name], listed, now);
    if (merged !== undefined) {
      state.backends[name] = merged.backend;
      changed ||= merged.changed;
      if (merged.missing.length > 0) {
        options.logger.warn(
          { backend: name, versions: merged.missing },
          'key versions in the state are missing from the backend; their data is unreadable until they are restored',
        );
      }
      continue;
    }
    if (!options.create || !backend.autoCreate) {
      throw new BrokerError(
        'KEY_MISSING',
        `backend ${name} holds no key version; set ${backend.autoCreateOption}: true on it to create version 1, or create the key in the ${backend.type} service`,
      );
    }
    const created = await backend.createVersion(callSignal(ADMIN_CALL_MS));
    state.backends[name] = {
      writeVersion: created.version,
      versions: [
        {
          version: created.version,
          fingerprint: created.fingerprint,
          createdAt: created.createdAt ?? now.toISOString(),
          state: 'active',
        },
      ],
    };
    changed = true;
  }
  return { state, changed };
}

function round(ms: number): number {
  return Math.round(ms * 100) / 100;
}
