// Every change to the key set: rotation, adoption of a rotation done in the service,
// retirement and restoration of versions, the failover setting, reloads of the state file,
// and Decrypt usage. Changes run one at a time and are persisted before they count: if the
// state file cannot be written, the change is undone and reported.
import { createHash } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
import type { KekBackend, KeyVersionInfo } from '../backends/kek.ts';
import type { BrokerConfig } from '../config/schema.ts';
import { BrokerError, toBrokerError } from '../errors.ts';
import type { Logger } from '../log.ts';
import { startDeadline } from '../deadline.ts';
import { KeyRegistry, reconcileBackend, type WriteSnapshot } from './key-registry.ts';
import type { BrokerState, FailoverSetting, StateStore, StoredVersion } from './state-store.ts';

/** Budget for key administration (listing, creating versions), which the apiserver does not wait on. */
const ADMIN_CALL_MS = 30000;
/** How often a Decrypt for an unknown key version may re-list the backends' versions. */
const VERSION_REFRESH_MIN_INTERVAL_MS = 5000;
const STATE_WATCH_INTERVAL_MS = 1000;
const USAGE_FLUSH_INTERVAL_MS = 60000;

export interface LifecycleDeps {
  readonly config: BrokerConfig;
  readonly backends: ReadonlyMap<string, KekBackend>;
  readonly store: StateStore;
  readonly logger: Logger;
  readonly now: () => Date;
  /** Told about every state-file write that failed. */
  readonly onStateWriteFailure?: () => void;
}

export interface VersionView extends StoredVersion {
  readonly role: 'write' | 'active' | 'retired';
  readonly decryptsSinceStart: number;
}

interface Usage {
  sinceStart: number;
  pending: number;
  lastAt: string;
}

export class KeyLifecycle {
  readonly #deps: LifecycleDeps;
  readonly #registry: KeyRegistry;
  readonly #usage = new Map<string, Usage>();
  #changes: Promise<unknown> = Promise.resolve();
  #reloading: Promise<void> | undefined;
  #lastVersionRefresh = 0;
  #unwatch: (() => void) | undefined;
  #flushTimer: NodeJS.Timeout | undefined;

  private constructor(deps: LifecycleDeps, registry: KeyRegistry) {
    this.#deps = deps;
    this.#registry = registry;
  }

  /** Reconciles the state file with what the (opened) backends hold, creating keys if allowed. */
  static async open(deps: LifecycleDeps): Promise<KeyLifecycle> {
    const stored = await deps.store.load();
    const result = await reconcileAll(deps.backends, stored, deps.now(), {
      create: true,
      logger: deps.logger,
    });
    const failover = resolveFailover(result.state, deps.config, deps.logger);
    const changed = result.changed || stored === undefined || failover.dropped;
    const lifecycle = new KeyLifecycle(deps, new KeyRegistry(result.state, failover.setting));
    if (changed) await deps.store.save(lifecycle.#registry.toState());
    return lifecycle;
  }

  start(): void {
    this.#unwatch = this.#deps.store.watch(() => void this.reload(), STATE_WATCH_INTERVAL_MS);
    this.#flushTimer = setInterval(() => void this.flushUsage(), USAGE_FLUSH_INTERVAL_MS).unref();
  }

  async stop(): Promise<void> {
    this.#unwatch?.();
    clearInterval(this.#flushTimer);
    await this.#reloading;
    await this.flushUsage();
  }

  get current(): WriteSnapshot {
    return this.#registry.current;
  }

  get failover(): FailoverSetting {
    return this.#registry.failover;
  }

  /** A strong ETag of the failover setting, for optimistic concurrency in the admin API. */
  get failoverEtag(): string {
    return `"${createHash('sha256').update(JSON.stringify(this.#registry.failover)).digest('base64url').slice(0, 22)}"`;
  }

  version(backend: string, version: string): StoredVersion | undefined {
    return this.#registry.version(backend, version);
  }

  /** Every backend's versions with their role and usage, for the admin API. */
  versions(): Record<string, VersionView[]> {
    const state = this.#registry.toState();
    const views: Record<string, VersionView[]> = {};
    for (const [backend, entry] of Object.entries(state.backends)) {
      views[backend] = entry.versions.map(version => {
        const usage = this.#usage.get(usageKey(backend, version.version));
        const lastDecryptAt = latest(version.lastDecryptAt, usage?.lastAt);
        return {
          ...version,
          ...(lastDecryptAt !== undefined && { lastDecryptAt }),
          decryptCount: (version.decryptCount ?? 0) + (usage?.pending ?? 0),
          decryptsSinceStart: usage?.sinceStart ?? 0,
          role: version.version === entry.writeVersion ? 'write' : version.state,
        };
      });
    }
    return views;
  }

  /** Creates a new key version in a backend and makes it the write version (key_id changes). */
  rotate(backendName: string): Promise<{ keyId: string; version: string }> {
    const backend = this.#backend(backendName);
    return this.#serialized(async () => {
      const created = await backend.createVersion(startDeadline(ADMIN_CALL_MS));
      return this.#makeWriteVersion(backendName, created, 'key rotated');
    });
  }

  /** Adopts a version the service created itself (seen stable by the rotation watch). */
  adopt(backendName: string, info: KeyVersionInfo): Promise<void> {
    return this.#serialized(async () => {
      await this.#makeWriteVersion(backendName, info, 'adopted a rotation done in the backend');
    });
  }

  /**
   * Retires a version: it no longer unwraps. Refused while it is a write version, and,
   * unless forced, while a Decrypt needed it within the retirement window.
   */
  retire(
    backendName: string,
    versionName: string,
    options: { force: boolean },
  ): Promise<{ before: StoredVersion['state']; after: StoredVersion['state'] }> {
    return this.#serialized(async () => {
      const version = this.#knownVersion(backendName, versionName);
      if (this.#registry.writeVersion(backendName)?.version === versionName) {
        throw new BrokerError(
          'VERSION_IN_USE',
          `version ${versionName} is the write version of backend ${backendName}; rotate before retiring it`,
        );
      }
      const lastDecryptAt = latest(
        version.lastDecryptAt,
        this.#usage.get(usageKey(backendName, versionName))?.lastAt,
      );
      const windowMs = this.#deps.config.retirement.idleWindowMs;
      if (
        !options.force &&
        lastDecryptAt !== undefined &&
        this.#deps.now().getTime() - Date.parse(lastDecryptAt) < windowMs
      ) {
        throw new BrokerError(
          'VERSION_IN_USE',
          `version ${versionName} of backend ${backendName} was needed by a Decrypt at ${lastDecryptAt}, within the retirement window of ${windowMs} ms; rewrite the data under it first, or force`,
        );
      }
      const before = version.state;
      await this.#commit(() => this.#registry.setVersionState(backendName, versionName, 'retired'));
      return { before, after: 'retired' as const };
    });
  }

  restore(
    backendName: string,
    versionName: string,
  ): Promise<{ before: StoredVersion['state']; after: StoredVersion['state'] }> {
    return this.#serialized(async () => {
      const before = this.#knownVersion(backendName, versionName).state;
      await this.#commit(() => this.#registry.setVersionState(backendName, versionName, 'active'));
      return { before, after: 'active' as const };
    });
  }

  /** Changes the failover setting at run time, if `etag` still names the current one. */
  setFailover(
    setting: FailoverSetting,
    etag: string,
  ): Promise<{ before: FailoverSetting; after: FailoverSetting; keyId: string }> {
    return this.#serialized(async () => {
      if (etag !== this.failoverEtag) {
        throw new BrokerError(
          'PRECONDITION_FAILED',
          'the failover setting changed since it was read; read it again',
        );
      }
      setting.order.forEach((name, index) => {
        if (!this.#deps.backends.has(name))
          throw new BrokerError('INVALID_REQUEST', `order[${index}]: no backend is named '${name}'`);
      });
      if (new Set(setting.order).size !== setting.order.length)
        throw new BrokerError('INVALID_REQUEST', 'order: a backend is listed twice');
      const before = this.#registry.failover;
      const keyIdBefore = this.#registry.current.keyId;
      const { order, wrap } = this.#deps.config.failover;
      await this.#commit(() => this.#registry.setFailover(setting, { order: [...order], wrap }));
      const { keyId } = this.#registry.current;
      if (keyId !== keyIdBefore)
        this.#deps.logger.info({ keyId, previousKeyId: keyIdBefore }, 'key set changed');
      return { before, after: this.#registry.failover, keyId };
    });
  }

  /**
   * With wrap: first, moves writes to another backend. Every switch also starts a new
   * generation, so a return to an earlier backend never reuses its old key_id.
   */
  switchWriter(backend: string, reason: string): Promise<void> {
    return this.#serialized(async () => {
      if (this.#registry.current.writeKeys[0]?.backend === backend) return;
      const before = this.#registry.current.keyId;
      await this.#commit(() => {
        this.#registry.setActiveWriter(backend);
        this.#registry.bumpGeneration();
      });
      const { keyId } = this.#registry.current;
      this.#deps.logger.warn(
        { backend, reason, keyId, previousKeyId: before },
        'writes moved to another backend',
      );
      this.#deps.logger.info({ keyId, previousKeyId: before }, 'key set changed');
    });
  }

  /** A new key_id over the same keys: the apiserver re-seeds (used to heal thin seeds). */
  bumpGeneration(reason: string): Promise<void> {
    return this.#serialized(async () => {
      const before = this.#registry.current.keyId;
      await this.#commit(() => this.#registry.bumpGeneration());
      const { keyId } = this.#registry.current;
      this.#deps.logger.info({ reason, keyId, previousKeyId: before }, 'key set changed');
    });
  }

  /** Counts a Decrypt that needed a version; persisted with the next flush. */
  recordDecrypt(backend: string, version: string): void {
    const key = usageKey(backend, version);
    const usage = this.#usage.get(key) ?? { sinceStart: 0, pending: 0, lastAt: '' };
    usage.sinceStart++;
    usage.pending++;
    usage.lastAt = this.#deps.now().toISOString();
    this.#usage.set(key, usage);
  }

  /** Writes pending Decrypt usage into the state file. */
  flushUsage(): Promise<void> {
    const pending = [...this.#usage.entries()].filter(([, usage]) => usage.pending > 0);
    if (pending.length === 0) return Promise.resolve();
    return this.#serialized(async () => {
      const taken = pending.map(([key, usage]) => ({ key, usage, count: usage.pending }));
      await this.#commit(() => {
        for (const { key, usage, count } of taken) {
          const [backend = '', version = ''] = key.split('\0');
          this.#registry.addUsage(backend, version, count, usage.lastAt);
        }
      });
      for (const { usage, count } of taken) usage.pending -= count;
    }).catch((error: unknown) => {
      this.#deps.logger.warn(
        { code: toBrokerError(error).code },
        'could not persist Decrypt usage; will retry',
      );
    });
  }

  /** Re-reads the state file (after another process changed it) and re-lists versions. */
  reload(): Promise<void> {
    this.#reloading ??= this.#serialized(async () => {
      try {
        const { store, backends, now, logger } = this.#deps;
        let stored = await store.load();
        if (stored === undefined) {
          // The file vanished under a running broker (deleted by hand, a wiped folder): the
          // registry in memory is the better record, retired versions and all.
          stored = this.#registry.toState();
          await store.save(stored);
          logger.warn(
            { path: this.#deps.config.state.path },
            'state file disappeared; rewrote it from memory',
          );
        }
        const result = await reconcileAll(backends, stored, now(), { create: false, logger });
        const before = this.#registry.current.keyId;
        this.#registry.replace(result.state);
        if (result.changed) await store.save(result.state);
        const after = this.#registry.current.keyId;
        if (before !== after) logger.info({ keyId: after, previousKeyId: before }, 'key set changed');
      } catch (error) {
        const brokerError = toBrokerError(error);
        this.#deps.logger.error(
          { code: brokerError.code, err: brokerError.message },
          'state reload failed; keeping the current key set',
        );
      }
    }).finally(() => {
      this.#reloading = undefined;
    });
    return this.#reloading;
  }

  /** New versions may appear in a shared backend (another broker rotated): look, but rarely. */
  async refreshVersions(): Promise<boolean> {
    const now = Date.now();
    if (now - this.#lastVersionRefresh < VERSION_REFRESH_MIN_INTERVAL_MS) return false;
    this.#lastVersionRefresh = now;
    await this.reload();
    return true;
  }

  writeVersion(backend: string): StoredVersion | undefined {
    return this.#registry.writeVersion(backend);
  }

  async #makeWriteVersion(
    backend: string,
    info: KeyVersionInfo,
    message: string,
  ): Promise<{ keyId: string; version: string }> {
    const before = this.#registry.current.keyId;
    await this.#commit(() => this.#registry.setWriteVersion(backend, info, this.#deps.now()));
    const { keyId } = this.#registry.current;
    this.#deps.logger.info({ backend, version: info.version, keyId }, message);
    if (keyId !== before) this.#deps.logger.info({ keyId, previousKeyId: before }, 'key set changed');
    return { keyId, version: info.version };
  }

  /** Applies a change to the registry and persists it; undoes it when the write fails. */
  async #commit(change: () => void): Promise<void> {
    const before = this.#registry.toState();
    const failoverBefore = this.#registry.failover;
    const writerBefore = this.#registry.activeWriter;
    change();
    try {
      await this.#deps.store.save(this.#registry.toState());
    } catch (error) {
      this.#registry.replace(before, failoverBefore);
      this.#registry.setActiveWriter(writerBefore);
      this.#deps.onStateWriteFailure?.();
      const code = (error as NodeJS.ErrnoException).code ?? 'error';
      throw new BrokerError(
        'STATE_WRITE_FAILED',
        `the state file could not be written (${code}); nothing was changed`,
        code,
      );
    }
  }

  /** Key-set changes run one at a time, so two never race to the same version number. */
  #serialized<T>(change: () => Promise<T>): Promise<T> {
    const run = this.#changes.then(change);
    this.#changes = run.catch(() => undefined);
    return run;
  }

  #backend(name: string): KekBackend {
    const backend = this.#deps.backends.get(name);
    if (backend === undefined) throw new BrokerError('NOT_FOUND', `no backend is named '${name}'`);
    return backend;
  }

  #knownVersion(backendName: string, versionName: string): StoredVersion {
    this.#backend(backendName);
    const version = this.#registry.version(backendName, versionName);
    if (version === undefined)
      throw new BrokerError('NOT_FOUND', `backend ${backendName} has no key version ${versionName}`);
    return version;
  }
}

/**
 * The failover setting in force: a run-time change recorded in the state still applies
 * while the config's setting is the one it replaced; once the config file was edited, the
 * file wins again (and the stale run-time change is dropped).
 */
function resolveFailover(
  state: BrokerState,
  config: BrokerConfig,
  logger: Logger,
): { setting: FailoverSetting; dropped: boolean } {
  const fromConfig: FailoverSetting = { order: [...config.failover.order], wrap: config.failover.wrap };
  const recorded = state.failover;
  if (recorded === undefined) return { setting: fromConfig, dropped: false };
  const usable = recorded.current.order.every(name => config.backends.some(backend => backend.name === name));
  if (usable && isDeepStrictEqual(recorded.basedOn, fromConfig))
    return { setting: recorded.current, dropped: false };
  logger.warn(
    { runtime: recorded.current, config: fromConfig },
    'the config file changed the failover setting since the last run-time change; using the config',
  );
  delete state.failover;
  return { setting: fromConfig, dropped: true };
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
    const listed = await backend.listVersions(startDeadline(ADMIN_CALL_MS));
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
    const created = await backend.createVersion(startDeadline(ADMIN_CALL_MS));
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

function usageKey(backend: string, version: string): string {
  return `${backend}\0${version}`;
}

function latest(a: string | undefined, b: string | undefined): string | undefined {
  if (a === undefined || a === '') return b === '' ? undefined : b;
  if (b === undefined || b === '') return a;
  return a > b ? a : b;
}
