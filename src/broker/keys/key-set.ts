// Every change to the key set: rotation, adoption of a rotation done in the service,
// retirement and restoration of versions, the failover setting, the writer switch of
// `wrap: first`, generation bumps, and usage flushes. Changes run one at a time and count
// only once persisted: when the store cannot be written, the change is undone and reported.
import { createHash } from 'node:crypto';
import type { KekBackend, KeyVersionInfo } from '../../backends/kek.ts';
import type { BrokerConfig } from '../../config/schema.ts';
import { within } from '../../deadline.ts';
import { BrokerError, isBrokerError } from '../../errors.ts';
import type { Logger } from '../../log.ts';
import { ADMIN_CALL_MS } from '../state/reconcile.ts';
import type { BrokerState, FailoverSetting, StoredVersion, ThinSeed } from '../state/state-schema.ts';
import type { StateStore } from '../state/state-store.ts';
import type { KeyRegistry, WriteSnapshot } from './key-registry.ts';
import type { SerialQueue } from './serial-queue.ts';
import type { UsageScan } from '../usage-scan.ts';
import { judgeVersion, refusalFor, scanRefusal, type VersionJudgement } from './retirement.ts';
import type { UsageLog } from './usage.ts';

export interface KeySetDeps {
  readonly config: BrokerConfig;
  readonly backends: ReadonlyMap<string, KekBackend>;
  readonly registry: KeyRegistry;
  readonly queue: SerialQueue;
  readonly store: StateStore;
  readonly usage: UsageLog;
  readonly logger: Logger;
  readonly now: () => Date;
  /** Told about every state write that failed. */
  readonly onStateWriteFailure: () => void;
  /** Told after every change that was persisted and applied. */
  readonly onCommitted: () => void;
}

export type VersionState = StoredVersion['state'];

export class KeySet {
  readonly #deps: KeySetDeps;
  readonly #registry: KeyRegistry;

  constructor(deps: KeySetDeps) {
    this.#deps = deps;
    this.#registry = deps.registry;
  }

  get current(): WriteSnapshot {
    return this.#registry.current;
  }

  get failover(): FailoverSetting {
    return this.#registry.failover;
  }

  /** Whether a backend only wraps (an escrow key). */
  isWriteOnly(backend: string): boolean {
    return this.#registry.isWriteOnly(backend);
  }

  /** A strong ETag of the failover setting, for optimistic concurrency in the admin API. */
  get failoverEtag(): string {
    const digest = createHash('sha256').update(JSON.stringify(this.#registry.failover)).digest('base64url');
    return `"${digest.slice(0, 22)}"`;
  }

  version(backend: string, version: string): StoredVersion | undefined {
    return this.#registry.version(backend, version);
  }

  writeVersion(backend: string): StoredVersion | undefined {
    return this.#registry.writeVersion(backend);
  }

  /** Every backend's stored versions and its write version (a copy). */
  stored(): BrokerState['backends'] {
    return this.#registry.toState().backends;
  }

  /**
   * Creates a new key version in a backend and makes it the write version (key_id changes).
   * The backend's versions are listed once, so versions another process created meanwhile
   * are adopted in the same commit.
   */
  rotate(backendName: string): Promise<{ keyId: string; version: string }> {
    const backend = this.#backend(backendName);
    return this.#deps.queue.run(async () => {
      const { created, listed } = await within(ADMIN_CALL_MS, async deadline => ({
        created: await backend.createVersion(deadline),
        listed: await backend.listVersions(deadline),
      }));
      return this.#makeWriteVersion(backendName, created, 'key rotated', listed);
    });
  }

  /** Merges a listing of one backend (taken by a Decrypt that met a new version) and persists it. */
  adoptListing(backendName: string, listed: readonly KeyVersionInfo[]): Promise<void> {
    return this.#deps.queue.run(() =>
      this.#commit(() => this.#registry.adoptListed(backendName, listed, this.#deps.now())),
    );
  }

  /** Adopts a version the service created itself (seen stable by the rotation watch). */
  adopt(backendName: string, info: KeyVersionInfo): Promise<void> {
    return this.#deps.queue.run(async () => {
      await this.#makeWriteVersion(backendName, info, 'adopted a rotation done in the backend');
    });
  }

  /**
   * Retires a version: it no longer unwraps. Refused while it is a write version, and,
   * unless forced, while the newest usage scan does not show that no stored object needs it.
   */
  retire(
    backendName: string,
    versionName: string,
    options: { force: boolean },
  ): Promise<{ before: VersionState; after: VersionState }> {
    return this.#deps.queue.run(async () => {
      const version = this.#knownVersion(backendName, versionName);
      const scan = this.#registry.lastScan();
      const judgement = this.judge(backendName, version, scan);
      const refusal = refusalFor(judgement, scan);
      if (refusal !== undefined && (judgement.stage === 'write' || !options.force)) throw refusal;
      const before = version.state;
      await this.#commit(() => this.#registry.setVersionState(backendName, versionName, 'retired'));
      return { before, after: 'retired' as const };
    });
  }

  /**
   * What stored data needs of a version, by the newest usage scan (or `scan`, a copy of it
   * taken once to judge many versions).
   */
  judge(backendName: string, version: StoredVersion, scan = this.#registry.lastScan()): VersionJudgement {
    return judgeVersion({
      backend: backendName,
      version,
      isWriteVersion: this.#registry.writeVersion(backendName)?.version === version.version,
      lastScan: scan,
      readable: (backend, name) =>
        this.#deps.backends.has(backend) && this.#registry.version(backend, name)?.state === 'active',
      scanAfterWriteMs: this.#deps.config.retirement.scanAfterWriteMs,
      now: this.#deps.now(),
    });
  }

  lastScan(): UsageScan | undefined {
    return this.#registry.lastScan();
  }

  /** Keeps a usage scan as the evidence retirement is judged by; an older one is refused. */
  recordScan(scan: UsageScan): Promise<void> {
    return this.#deps.queue.run(async () => {
      const refusal = scanRefusal(scan, this.#registry.lastScan(), this.#deps.now());
      if (refusal !== undefined) throw refusal;
      await this.#commit(() => this.#registry.setLastScan(scan));
    });
  }

  restore(backendName: string, versionName: string): Promise<{ before: VersionState; after: VersionState }> {
    return this.#deps.queue.run(async () => {
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
    return this.#deps.queue.run(async () => {
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
      const { order, wrap } = this.#deps.config.failover;
      await this.#changeKeySet({}, () => this.#registry.setFailover(setting, { order: [...order], wrap }));
      return { before, after: this.#registry.failover, keyId: this.#registry.current.keyId };
    });
  }

  /**
   * With wrap: first, moves writes to another backend. Every switch also starts a new
   * generation, so a return to an earlier backend never reuses its old key_id.
   */
  switchWriter(backend: string, reason: string): Promise<void> {
    return this.#deps.queue.run(async () => {
      if (this.#registry.current.writeKeys[0]?.backend === backend) return;
      await this.#changeKeySet(
        {},
        () => {
          this.#registry.setActiveWriter(backend);
          this.#registry.bumpGeneration();
        },
        (keyId, previousKeyId) =>
          this.#deps.logger.warn(
            { backend, reason, keyId, previousKeyId },
            'writes moved to another backend',
          ),
      );
    });
  }

  /** A new key_id over the same keys: the apiserver re-seeds (used to heal thin seeds). */
  bumpGeneration(reason: string): Promise<void> {
    return this.#deps.queue.run(() => this.#changeKeySet({ reason }, () => this.#registry.bumpGeneration()));
  }

  /** Records which seeds are thin, so that their healing survives a restart. */
  recordThinSeeds(seeds: readonly ThinSeed[]): Promise<void> {
    return this.#deps.queue
      .run(() => this.#commit(() => this.#registry.setThinSeeds(seeds)))
      .catch((error: unknown) => {
        this.#deps.logger.warn(
          { code: (error as BrokerError).code },
          'could not persist the under-replicated seeds; healing them still runs until a restart',
        );
      });
  }

  /** Writes the Decrypt usage counted since the last flush into the stored state. */
  flushUsage(): Promise<void> {
    if (!this.#deps.usage.hasPending()) return Promise.resolve();
    return this.#deps.queue
      .run(async () => {
        let folded: { done: () => void } | undefined;
        await this.#commit(() => {
          folded = this.#deps.usage.fold(this.#registry);
        });
        folded?.done();
      })
      .catch((error: unknown) => {
        this.#deps.logger.warn(
          { code: (error as BrokerError).code },
          'could not persist Decrypt usage; will retry',
        );
      });
  }

  /**
   * Persists a change, then applies it: the change is worked out on the registry and taken
   * back at once (synchronously, so no KMS call sees it), and applied again only when the
   * store took it. A shared store may hold it for seconds while peers confirm a new key_id;
   * until then Status keeps advertising the old one. A change that says it changed nothing
   * (returns false) is not saved. Runs inside the queue (its callers hold it).
   */
  async #commit(change: () => boolean | void): Promise<void> {
    const undo = this.#registry.checkpoint();
    let redo: () => void;
    let next: { state: BrokerState; keyId: string };
    try {
      if (change() === false) return;
      next = { state: this.#registry.toState(), keyId: this.#registry.current.keyId };
      redo = this.#registry.checkpoint();
    } finally {
      undo();
    }
    try {
      await this.#deps.store.save(next.state, next.keyId);
    } catch (error) {
      this.#deps.onStateWriteFailure();
      // A shared store's own refusals (a conflict, etcd unreachable, a peer that cannot
      // unwrap) are quoted as they are; a write that failed is said to have changed nothing.
      if (isBrokerError(error) && error.code !== 'STATE_WRITE_FAILED') throw error;
      const known = isBrokerError(error);
      const cause = known ? error.causeName : ((error as NodeJS.ErrnoException).code ?? 'error');
      const reason = known
        ? error.message
        : `the state at ${this.#deps.store.location} could not be written (${cause})`;
      throw new BrokerError('STATE_WRITE_FAILED', `${reason}; nothing was changed`, cause);
    }
    redo();
    this.#deps.onCommitted();
  }

  async #makeWriteVersion(
    backend: string,
    info: KeyVersionInfo,
    message: string,
    listed?: readonly KeyVersionInfo[],
  ): Promise<{ keyId: string; version: string }> {
    await this.#changeKeySet(
      {},
      () => {
        if (listed !== undefined) this.#registry.adoptListed(backend, listed, this.#deps.now());
        this.#registry.setWriteVersion(backend, info, this.#deps.now());
      },
      keyId => this.#deps.logger.info({ backend, version: info.version, keyId }, message),
    );
    return { keyId: this.#registry.current.keyId, version: info.version };
  }

  /** A committed change, announced, then logged as 'key set changed' when key_id moved. */
  async #changeKeySet(
    fields: Record<string, string>,
    change: () => void,
    announce?: (keyId: string, previousKeyId: string) => void,
  ): Promise<void> {
    const before = this.#registry.current.keyId;
    await this.#commit(change);
    const { keyId } = this.#registry.current;
    announce?.(keyId, before);
    if (keyId !== before)
      this.#deps.logger.info({ ...fields, keyId, previousKeyId: before }, 'key set changed');
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
