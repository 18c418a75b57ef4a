// Keeps the key registry in step with its store and the backends: opens it at start-up
// (reconciling what the store says with what the reachable backends hold, creating version
// 1 where allowed), lets a backend that was unreachable join once it answers, reloads the
// registry when another writer changed the store, and merges listings of a backend that a
// Decrypt found new versions in. All of it runs in the key set's queue; none of it is ever
// on a KMS call's path.
import type { KekBackend, KeyVersionInfo } from '../../backends/kek.ts';
import { writeOnlyBackends } from '../../backends/kinds.ts';
import type { BrokerConfig } from '../../config/schema.ts';
import { within } from '../../deadline.ts';
import { isBrokerError, toBrokerError } from '../../errors.ts';
import type { Logger } from '../../log.ts';
import {
  ADMIN_CALL_MS,
  reconcileListing,
  reconcileListings,
  resolveFailover,
  type Listing,
} from '../state/reconcile.ts';
import type { BrokerState } from '../state/state-schema.ts';
import type { StateStore } from '../state/state-store.ts';
import { KeyRegistry } from './key-registry.ts';
import type { SerialQueue } from './serial-queue.ts';

export interface StateSyncDeps {
  readonly config: BrokerConfig;
  /** The backends reachable now: reloads list only these. */
  readonly reachable: () => ReadonlyMap<string, KekBackend>;
  readonly store: StateStore;
  readonly queue: SerialQueue;
  readonly logger: Logger;
  readonly now: () => Date;
}

const STATE_WATCH_INTERVAL_MS = 1000;
/** Start-up reads and reconciles a shared state at most this often when peers keep committing first. */
const OPEN_ATTEMPTS = 5;

export class StateSync {
  readonly #deps: StateSyncDeps;
  readonly #registry: KeyRegistry;
  #unwatch: (() => void) | undefined;

  private constructor(deps: StateSyncDeps, registry: KeyRegistry) {
    this.#deps = deps;
    this.#registry = registry;
  }

  /**
   * Reconciles the stored state with listings of the backends reached at start, and persists
   * the result. What the state says of the others stands until they join.
   */
  static async open(deps: StateSyncDeps, listings: ReadonlyMap<string, Listing>): Promise<StateSync> {
    for (let attempt = 1; ; attempt++) {
      const stored = await deps.store.load();
      const result = await reconcileListings(stored, listings, deps.now(), {
        create: true,
        logger: deps.logger,
      });
      const failover = resolveFailover(result.state, deps.config, deps.logger);
      const registry = new KeyRegistry(
        result.state,
        failover.setting,
        writeOnlyBackends(deps.config.backends),
      );
      try {
        const unshared = deps.store.shared?.needsSeed() === true;
        if (result.changed || stored === undefined || failover.dropped || unshared)
          await deps.store.save(registry.toState(), registry.current.keyId);
      } catch (error) {
        // A shared store: a peer that started at the same moment committed first (read its
        // state and reconcile again), or etcd does not answer (serve what the local copy
        // and the backends say; the next change shares it). A file that cannot be written
        // stops the start, as before.
        if (deps.store.shared === undefined || !isBrokerError(error)) throw error;
        if (error.code === 'STATE_CONFLICT' && attempt < OPEN_ATTEMPTS) continue;
        if (error.code === 'STATE_WRITE_FAILED' || error.code === 'STATE_CONFLICT') throw error;
        deps.logger.warn(
          { code: error.code, err: error.message },
          'could not share the reconciled state at start; serving it from this node',
        );
      }
      return new StateSync(deps, registry);
    }
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

  /**
   * Re-reads the store (another writer changed it) and re-lists every backend's versions. A
   * shared store's state was committed by peers that listed and confirmed it: it is taken as is.
   */
  reload(): Promise<void> {
    return this.#deps.queue.run(async () => {
      const { store, now, logger } = this.#deps;
      try {
        let stored = await store.load();
        if (stored === undefined) {
          // The state vanished under a running broker (a file deleted by hand, a wiped
          // folder): the registry in memory is the better record, retired versions and all.
          stored = this.#registry.toState();
          await store.save(stored, this.#registry.current.keyId);
          logger.warn({ path: store.location }, 'state file disappeared; rewrote it from memory');
        }
        if (store.shared !== undefined) {
          this.#replace(stored);
          return;
        }
        const result = await reconcileListings(stored, await this.#listReachable(), now(), {
          create: false,
          logger,
        });
        this.#replace(result.state);
        if (result.changed) await store.save(result.state, this.#registry.current.keyId);
      } catch (error) {
        const brokerError = toBrokerError(error);
        logger.error(
          { code: brokerError.code, err: brokerError.message },
          'state reload failed; keeping the current key set',
        );
      }
    });
  }

  /**
   * A backend that was unreachable answers: its listing is reconciled with what the state
   * says of it (version 1 created where allowed), persisted, and its keys join the key set.
   * A refusal (a recreated key, a backend pointing elsewhere) keeps it out.
   */
  join(backend: KekBackend, listed: readonly KeyVersionInfo[]): Promise<void> {
    return this.#deps.queue.run(async () => {
      const state = this.#registry.toState();
      const merged = await reconcileListing(
        backend.name,
        backend,
        state.backends[backend.name],
        listed,
        this.#deps.now(),
        {
          create: true,
          logger: this.#deps.logger,
        },
      );
      state.backends[backend.name] = merged.backend;
      if (merged.changed) {
        const { keyId } = KeyRegistry.under(state, this.#deps.config, this.#deps.logger).current;
        await this.#deps.store.save(state, keyId);
      }
      this.#replace(state);
      this.#deps.logger.info({ backend: backend.name }, 'backend joined');
    });
  }

  /** Listings of the reachable backends; one that fails now keeps what the state says of it. */
  async #listReachable(): Promise<Map<string, Listing>> {
    const listings = new Map<string, Listing>();
    for (const [name, backend] of this.#deps.reachable()) {
      try {
        const listed = await within(ADMIN_CALL_MS, deadline => backend.listVersions(deadline));
        listings.set(name, { backend, listed });
      } catch (error) {
        this.#deps.logger.warn(
          { backend: name, code: toBrokerError(error).code },
          'could not list key versions on reload; keeping what the state says of this backend',
        );
      }
    }
    return listings;
  }

  #failoverFor(state: BrokerState) {
    return resolveFailover(state, this.#deps.config, this.#deps.logger).setting;
  }

  #replace(state: BrokerState): void {
    const before = this.#registry.current.keyId;
    this.#registry.replace(state, this.#failoverFor(state));
    const after = this.#registry.current.keyId;
    if (before === after) return;
    this.#deps.logger.info({ keyId: after, previousKeyId: before }, 'key set changed');
    this.#deps.store.shared?.advertisedChanged();
  }
}
