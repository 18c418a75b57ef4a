// Keeps the key registry in step with its store and the backends: opens it at start-up
// (reconciling what the store says with what the backends hold, creating version 1 where
// allowed), reloads it when another writer changed the store, and merges listings of a
// backend that a Decrypt found new versions in. All of it runs in the key set's queue;
// none of it is ever on a KMS call's path.
import type { KekBackend, KeyVersionInfo } from '../../backends/kek.ts';
import type { BrokerConfig } from '../../config/schema.ts';
import { toBrokerError } from '../../errors.ts';
import type { Logger } from '../../log.ts';
import { reconcileAll, resolveFailover } from '../state/reconcile.ts';
import type { StateStore } from '../state/state-store.ts';
import { KeyRegistry } from './key-registry.ts';
import type { SerialQueue } from './serial-queue.ts';

export interface StateSyncDeps {
  readonly config: BrokerConfig;
  readonly backends: ReadonlyMap<string, KekBackend>;
  readonly store: StateStore;
  readonly queue: SerialQueue;
  readonly logger: Logger;
  readonly now: () => Date;
}

const STATE_WATCH_INTERVAL_MS = 1000;

export class StateSync {
  readonly #deps: StateSyncDeps;
  readonly #registry: KeyRegistry;
  #unwatch: (() => void) | undefined;

  private constructor(deps: StateSyncDeps, registry: KeyRegistry) {
    this.#deps = deps;
    this.#registry = registry;
  }

  /** Reconciles the stored state with what the (opened) backends hold, and persists the result. */
  static async open(deps: StateSyncDeps): Promise<StateSync> {
    const stored = await deps.store.load();
    const result = await reconcileAll(deps.backends, stored, deps.now(), {
      create: true,
      logger: deps.logger,
    });
    const failover = resolveFailover(result.state, deps.config, deps.logger);
    const registry = new KeyRegistry(result.state, failover.setting);
    if (result.changed || stored === undefined || failover.dropped) await deps.store.save(registry.toState());
    return new StateSync(deps, registry);
  }

  get registry(): KeyRegistry {
    return this.#registry;
  }

  /** Watches the store for changes made by another writer. */
  start(): void {
    this.#unwatch = this.#deps.store.watch(() => void this.reload(), STATE_WATCH_INTERVAL_MS);
  }

  stop(): void {
    this.#unwatch?.();
  }

  /** Re-reads the store (another writer changed it) and re-lists every backend's versions. */
  reload(): Promise<void> {
    return this.#deps.queue.run(async () => {
      const { store, backends, now, logger } = this.#deps;
      try {
        let stored = await store.load();
        if (stored === undefined) {
          // The state vanished under a running broker (a file deleted by hand, a wiped
          // folder): the registry in memory is the better record, retired versions and all.
          stored = this.#registry.toState();
          await store.save(stored);
          logger.warn({ path: store.location }, 'state file disappeared; rewrote it from memory');
        }
        const result = await reconcileAll(backends, stored, now(), { create: false, logger });
        this.#replace(result.state);
        if (result.changed) await store.save(result.state);
      } catch (error) {
        const brokerError = toBrokerError(error);
        logger.error(
          { code: brokerError.code, err: brokerError.message },
          'state reload failed; keeping the current key set',
        );
      }
    });
  }

  /** Merges a listing of one backend (taken by a Decrypt that met a new version) and persists it. */
  adoptListing(backend: string, listed: readonly KeyVersionInfo[]): Promise<void> {
    return this.#deps.queue.run(async () => {
      if (this.#registry.adoptListed(backend, listed, this.#deps.now()))
        await this.#deps.store.save(this.#registry.toState());
    });
  }

  #replace(state: Parameters<KeyRegistry['replace']>[0]): void {
    const before = this.#registry.current.keyId;
    this.#registry.replace(state);
    const after = this.#registry.current.keyId;
    if (before !== after) this.#deps.logger.info({ keyId: after, previousKeyId: before }, 'key set changed');
  }
}
